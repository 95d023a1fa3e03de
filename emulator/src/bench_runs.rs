//! `emulator bench --runs K`: the median and range of every figure over K reports of the
//! same shape (each run paired: the pipeline and its yardsticks on the same brokers).

use serde_json::{Map, Value};

/// Every numeric figure of the reports, by its path (`pipeline.p99_ms`), with its value in
/// each run, in the order the serialized reports hold them.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    figures: Vec<(String, Vec<f64>)>,
}

fn leaves(prefix: &str, value: &Value, out: &mut Vec<(String, f64)>) {
    match value {
        Value::Object(fields) => {
            for (name, v) in fields {
                let path = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}.{name}")
                };
                leaves(&path, v, out);
            }
        }
        Value::Number(n) => out.push((prefix.to_owned(), n.as_f64().unwrap_or(f64::NAN))),
        // NaN (a figure a run could not measure) serializes as null.
        Value::Null => out.push((prefix.to_owned(), f64::NAN)),
        _ => {}
    }
}

/// The median of `values` (NaNs left out): the middle one, or the mean of the two middle.
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        f64::midpoint(v[mid - 1], v[mid])
    }
}

fn range(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .filter(|x| !x.is_nan())
        .fold((f64::NAN, f64::NAN), |(lo, hi), x| (lo.min(*x), hi.max(*x)))
}

/// A figure as the table prints it: whole numbers when large, two decimals when small.
fn shown(x: f64) -> String {
    if x.is_nan() {
        "-".into()
    } else if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}

impl Summary {
    /// Gathers the figures of `reports` (serialized [`crate::bench::BenchReport`]s).
    pub fn of(reports: &[Value]) -> Self {
        let mut figures: Vec<(String, Vec<f64>)> = Vec::new();
        for report in reports {
            let mut found = Vec::new();
            leaves("", report, &mut found);
            for (path, x) in found {
                match figures.iter_mut().find(|(p, _)| *p == path) {
                    Some((_, values)) => values.push(x),
                    None => figures.push((path, vec![x])),
                }
            }
        }
        Self { figures }
    }

    /// One line per figure: `path  median (min–max)`.
    pub fn lines(&self) -> Vec<String> {
        let width = self.figures.iter().map(|(p, _)| p.len()).max().unwrap_or(0);
        self.figures
            .iter()
            .map(|(path, values)| {
                let (lo, hi) = range(values);
                format!(
                    "{path:<width$}  {} ({}–{})",
                    shown(median(values)),
                    shown(lo),
                    shown(hi)
                )
            })
            .collect()
    }

    /// `{"runs", "median": {path: x}, "min": {…}, "max": {…}, "each": [reports]}`.
    pub fn to_json(&self, reports: Vec<Value>) -> Value {
        let mut med = Map::new();
        let mut min = Map::new();
        let mut max = Map::new();
        let number = |x: f64| serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number);
        for (path, values) in &self.figures {
            let (lo, hi) = range(values);
            med.insert(path.clone(), number(median(values)));
            min.insert(path.clone(), number(lo));
            max.insert(path.clone(), number(hi));
        }
        serde_json::json!({
            "runs": reports.len(),
            "median": med,
            "min": min,
            "max": max,
            "each": reports,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn medians_and_ranges_of_every_figure() {
        let reports = [
            json!({"events": 10, "pipeline": {"p99_ms": 30.0, "lost": 0}, "name": "x"}),
            json!({"events": 10, "pipeline": {"p99_ms": 90.0, "lost": 0}, "name": "x"}),
            json!({"events": 10, "pipeline": {"p99_ms": 40.0, "lost": 1}, "name": "x"}),
        ];
        let summary = Summary::of(&reports);
        let lines = summary.lines();
        assert_eq!(lines.len(), 3, "numbers only: {lines:?}");
        let p99 = lines
            .iter()
            .find(|l| l.starts_with("pipeline.p99_ms"))
            .expect("p99 line");
        assert!(p99.ends_with("40.00 (30.00–90.00)"), "{p99}");
        let out = summary.to_json(reports.to_vec());
        assert_eq!(out["median"]["pipeline.lost"], json!(0.0));
        assert_eq!(out["max"]["pipeline.lost"], json!(1.0));
        assert_eq!(out["runs"], json!(3));
    }

    #[test]
    fn a_median_leaves_out_what_was_not_measured() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[f64::NAN, 5.0]), 5.0);
        assert!(median(&[]).is_nan());
    }
}
