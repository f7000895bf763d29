//! The `user_data` carried by every submission: which operation, on which object.
//!
//! Layout (u64): `kind` in bits 56..64, a 24-bit generation in bits 32..56, and the slot
//! index in bits 0..32. The generation makes a completion that arrives after its
//! connection's slot was reused recognisable as stale.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Op {
    /// Multishot accept on a listener (slot = listener index).
    Accept = 1,
    /// Multishot receive into the buffer pool (slot = connection).
    Recv = 2,
    /// Single-shot receive into the connection's own buffer, used when the pool is empty
    /// or for large frames (slot = connection).
    RecvDirect = 3,
    /// Send of the connection's in-flight buffer.
    Send = 4,
    /// Outbound connect.
    Connect = 5,
    /// Read of the wake-up eventfd.
    Wake = 6,
    /// A cancellation request; its completion carries nothing we act on.
    Cancel = 7,
    /// A request to cancel a connection's multishot receive (to pause reading, or to switch
    /// to an in-place receive); its completion says whether to ask again.
    CancelRecv = 8,
}

impl Op {
    fn from_u8(v: u8) -> Option<Op> {
        Some(match v {
            1 => Op::Accept,
            2 => Op::Recv,
            3 => Op::RecvDirect,
            4 => Op::Send,
            5 => Op::Connect,
            6 => Op::Wake,
            7 => Op::Cancel,
            8 => Op::CancelRecv,
            _ => return None,
        })
    }
}

const GEN_MASK: u32 = 0x00FF_FFFF;

pub(crate) fn encode(op: Op, slot: u32, gen: u64) -> u64 {
    ((op as u64) << 56) | ((gen & GEN_MASK as u64) << 32) | slot as u64
}

pub(crate) fn decode(user_data: u64) -> Option<(Op, u32, u32)> {
    let op = Op::from_u8((user_data >> 56) as u8)?;
    Some((op, user_data as u32, ((user_data >> 32) as u32) & GEN_MASK))
}

/// Truncates a generation to the bits a token carries.
pub(crate) fn gen_bits(gen: u64) -> u32 {
    (gen & GEN_MASK as u64) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for op in [
            Op::Accept,
            Op::Recv,
            Op::RecvDirect,
            Op::Send,
            Op::Connect,
            Op::Wake,
            Op::Cancel,
            Op::CancelRecv,
        ] {
            let t = encode(op, 0xDEAD_BEEF, 0x0123_4567);
            assert_eq!(decode(t), Some((op, 0xDEAD_BEEF, 0x23_4567)));
            let t = encode(op, 7, 0xFFFF_0000_0123_4567);
            assert_eq!(decode(t), Some((op, 7, 0x23_4567)));
        }
        assert_eq!(decode(0), None);
    }
}
