//! The handlers' binaries and Lambda runtime under test, one binary: `handlers-server` as a
//! process, `handlers-lambda` against a Lambda Runtime API, keys from moto's Secrets Manager.

mod binaries;
mod lambda_runtime;
mod secrets;
