//! `io/xenbus.h`: the states a split driver's frontend and backend move through.

/// `enum xenbus_state`, as written (decimal) to a device's `state` node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u32)]
pub enum XenbusState {
    /// `XenbusStateUnknown`
    Unknown = 0,
    /// `XenbusStateInitialising`
    Initialising = 1,
    /// `XenbusStateInitWait`: finished early initialisation, waiting for the peer's details.
    InitWait = 2,
    /// `XenbusStateInitialised`: details published, waiting for the peer to connect.
    Initialised = 3,
    /// `XenbusStateConnected`
    Connected = 4,
    /// `XenbusStateClosing`: the device is being closed.
    Closing = 5,
    /// `XenbusStateClosed`
    Closed = 6,
    /// `XenbusStateReconfiguring`
    Reconfiguring = 7,
    /// `XenbusStateReconfigured`
    Reconfigured = 8,
}

impl XenbusState {
    /// Every state, in numeric order.
    pub const ALL: [XenbusState; 9] = [
        Self::Unknown,
        Self::Initialising,
        Self::InitWait,
        Self::Initialised,
        Self::Connected,
        Self::Closing,
        Self::Closed,
        Self::Reconfiguring,
        Self::Reconfigured,
    ];

    /// The state for a numeric value, `None` if it names no state.
    pub fn from_u32(v: u32) -> Option<Self> {
        Self::ALL.get(v as usize).copied()
    }

    /// Parse a `state` node's value (decimal text, surrounding whitespace ignored).
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let s = core::str::from_utf8(bytes).ok()?.trim();
        s.parse::<u32>().ok().and_then(Self::from_u32)
    }

    /// Xen's name for the state, as `xenbus_strstate` prints it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Unknown => "Unknown",
            Self::Initialising => "Initialising",
            Self::InitWait => "InitWait",
            Self::Initialised => "Initialised",
            Self::Connected => "Connected",
            Self::Closing => "Closing",
            Self::Closed => "Closed",
            Self::Reconfiguring => "Reconfiguring",
            Self::Reconfigured => "Reconfigured",
        }
    }
}
