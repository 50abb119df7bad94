//! Fake platform APIs for tests, served on 127.0.0.1 by the test process.

pub mod bigcommerce;
pub mod magento;
pub mod shopify;
