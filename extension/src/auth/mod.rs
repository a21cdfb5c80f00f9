pub mod email;
pub mod import;
pub mod keys;
pub mod password;
pub mod tokens;
pub mod patch;
pub mod totp;
