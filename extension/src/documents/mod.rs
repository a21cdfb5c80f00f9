pub mod acl;
pub mod names;
pub mod options;
pub mod schema;
pub mod ops;
