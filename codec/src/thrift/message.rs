//! Message headers: method name, message type and sequence id.

use crate::ByteString;

/// The kind of a Thrift message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// A call expecting a reply.
    Call = 1,
    /// A successful reply (which may carry a declared exception).
    Reply = 2,
    /// An `ApplicationException` reply.
    Exception = 3,
    /// A call expecting no reply.
    Oneway = 4,
}

impl MessageType {
    /// The type for a wire value, if valid.
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(MessageType::Call),
            2 => Some(MessageType::Reply),
            3 => Some(MessageType::Exception),
            4 => Some(MessageType::Oneway),
            _ => None,
        }
    }
}

/// The header of a Thrift message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageHeader {
    /// The method name.
    pub name: ByteString,
    /// Call, reply, exception or oneway.
    pub kind: MessageType,
    /// The sequence id that pairs a reply with its call.
    pub seq_id: i32,
}
