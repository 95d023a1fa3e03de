//! [`Destination`]: which local topic each source topic is copied to — the same name, one
//! renamed topic (`KAFKA_TOPIC`) or a prefixed name (`TOPIC_PREFIX`) — and how many
//! partitions a missing destination should get so copies keep their source partition.

use std::collections::BTreeMap;

use crate::Config;
use shared::Cursor;

/// The naming rule from source topic to local topic.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Destination {
    /// The source topic's own name.
    #[default]
    SameName,
    /// Every source topic into this one topic.
    Topic(String),
    /// This prefix followed by the source topic's name.
    Prefix(String),
}

impl Destination {
    /// The rule a validated client configuration asks for.
    pub fn from_config(config: &Config) -> Self {
        match (&config.kafka_topic, &config.topic_prefix) {
            (Some(topic), _) => Self::Topic(topic.trim().to_owned()),
            (None, Some(prefix)) => Self::Prefix(prefix.clone()),
            (None, None) => Self::SameName,
        }
    }

    /// The local topic `source` is copied to.
    pub fn topic_for(&self, source: &str) -> String {
        match self {
            Self::SameName => source.to_owned(),
            Self::Topic(topic) => topic.clone(),
            Self::Prefix(prefix) => format!("{prefix}{source}"),
        }
    }

    /// Partitions each destination needs to hold every source partition at its own number,
    /// from a cursor that lists the source partitions (the widest source wins when several
    /// share one destination).
    pub fn partitions_needed(&self, cursor: &Cursor) -> BTreeMap<String, i32> {
        let mut needed = BTreeMap::new();
        for (topic, partition, _) in cursor.iter() {
            let entry = needed.entry(self.topic_for(topic)).or_insert(0);
            *entry = (*entry).max(partition + 1);
        }
        needed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor(parts: &[(&str, i32)]) -> Cursor {
        let mut c = Cursor::new();
        for (topic, partition) in parts {
            c.set(topic, *partition, 0);
        }
        c
    }

    #[test]
    fn names_follow_the_rule() {
        assert_eq!(Destination::SameName.topic_for("orders"), "orders");
        assert_eq!(Destination::Topic("all".into()).topic_for("orders"), "all");
        assert_eq!(
            Destination::Prefix("aws.".into()).topic_for("orders"),
            "aws.orders"
        );
    }

    #[test]
    fn partitions_cover_every_source_partition() {
        let c = cursor(&[("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 5)]);
        let same = Destination::SameName.partitions_needed(&c);
        assert_eq!(same.get("a"), Some(&3));
        assert_eq!(same.get("b"), Some(&6));
        let merged = Destination::Topic("all".into()).partitions_needed(&c);
        assert_eq!(merged.into_iter().collect::<Vec<_>>(), [("all".into(), 6)]);
        let prefixed = Destination::Prefix("x-".into()).partitions_needed(&c);
        assert_eq!(prefixed.get("x-a"), Some(&3));
    }
}
