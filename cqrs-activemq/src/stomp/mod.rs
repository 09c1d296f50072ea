//! A small STOMP 1.2 client: the frame codec and one connection, with receipts, client
//! acknowledgements and heart-beats off. Only what the bridge needs.

mod connection;
mod frame;
mod url;

pub(crate) use connection::Connection;
pub(crate) use frame::Frame;
pub use url::StompUrl;
