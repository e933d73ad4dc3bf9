//! KVP items and the two sides' protocol states.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::keys;

/// One KVP item (host-to-guest or guest-to-host). Values are never plaintext secrets: data
/// values are ciphertext, the rest are states, keys and checksums.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct KvpItem {
    /// The KVP key, e.g. `hlvmm.data.guest_la_pw`.
    pub key: String,
    /// The value.
    pub value: String,
}

impl KvpItem {
    /// An item.
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
        }
    }

    /// The `(key, value)` pair.
    pub fn into_pair(self) -> (String, String) {
        (self.key, self.value)
    }

    /// The `(key, value)` pair, borrowed.
    pub fn as_pair(&self) -> (&str, &str) {
        (&self.key, &self.value)
    }
}

/// The item that tells the guest agent which provisioning system version the host runs.
pub fn version_item(version: &str) -> KvpItem {
    KvpItem::new(keys::VERSION, version)
}

/// Normalises a value as agents write it: surrounding whitespace and NULs removed.
pub(crate) fn normalise(value: &str) -> &str {
    value.trim_matches(|c: char| c.is_whitespace() || c == '\0')
}

/// The host's protocol state, published in [`keys::HOST_STATE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HostState {
    /// `waitingforpublickey`: the host waits for the guest's public key.
    WaitingForPublicKey,
    /// `provisioningdatapublished`: key, data and checksum are all published.
    ProvisioningDataPublished,
}

impl HostState {
    /// The KVP value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WaitingForPublicKey => "waitingforpublickey",
            Self::ProvisioningDataPublished => "provisioningdatapublished",
        }
    }

    /// The item that publishes this state.
    pub fn item(self) -> KvpItem {
        KvpItem::new(keys::HOST_STATE, self.as_str())
    }
}

impl fmt::Display for HostState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for HostState {
    type Err = Error;

    /// Parses a state value (case-insensitive; surrounding whitespace and NULs ignored).
    fn from_str(s: &str) -> Result<Self> {
        let v = normalise(s);
        [Self::WaitingForPublicKey, Self::ProvisioningDataPublished]
            .into_iter()
            .find(|state| state.as_str().eq_ignore_ascii_case(v))
            .ok_or_else(|| Error::UnknownState {
                key: keys::HOST_STATE,
                value: v.to_owned(),
            })
    }
}

/// The guest's protocol state, published in [`keys::GUEST_STATE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GuestState {
    /// `waitingforaeskey`: the public key is published; the guest waits for the payload.
    WaitingForAesKey,
    /// `applying`: the guest is decrypting and applying the payload.
    Applying,
    /// `provisioningapplied`: done.
    ProvisioningApplied,
    /// `provisioningfailed`: failed; the reason is in [`keys::GUEST_ERROR`].
    ProvisioningFailed,
}

impl GuestState {
    /// The KVP value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WaitingForAesKey => "waitingforaeskey",
            Self::Applying => "applying",
            Self::ProvisioningApplied => "provisioningapplied",
            Self::ProvisioningFailed => "provisioningfailed",
        }
    }

    /// Whether the guest is done, successfully or not.
    pub fn is_final(self) -> bool {
        matches!(self, Self::ProvisioningApplied | Self::ProvisioningFailed)
    }

    /// The item that publishes this state.
    pub fn item(self) -> KvpItem {
        KvpItem::new(keys::GUEST_STATE, self.as_str())
    }
}

impl fmt::Display for GuestState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for GuestState {
    type Err = Error;

    /// Parses a state value (case-insensitive; surrounding whitespace and NULs ignored).
    fn from_str(s: &str) -> Result<Self> {
        let v = normalise(s);
        [
            Self::WaitingForAesKey,
            Self::Applying,
            Self::ProvisioningApplied,
            Self::ProvisioningFailed,
        ]
        .into_iter()
        .find(|state| state.as_str().eq_ignore_ascii_case(v))
        .ok_or_else(|| Error::UnknownState {
            key: keys::GUEST_STATE,
            value: v.to_owned(),
        })
    }
}
