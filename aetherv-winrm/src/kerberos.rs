//! Kerberos through the system's GSSAPI (MIT krb5), feature `kerberos`.
//!
//! - [`KerberosAuth`]: what a client authenticates with (principal, password or the ticket
//!   cache / client keytab of the environment, the service principal, delegation, the HTTP
//!   scheme). Its credentials are acquired once and shared by every clone; they are acquired
//!   again when they are within [`RENEW_MARGIN`] of expiry, and once more when the KDC or the
//!   server says they expired.
//! - [`KerberosInitiator`] / [`KerberosAcceptor`]: the two ends of one connection's security
//!   context (a single leg for Kerberos, more for SPNEGO when needed). The initiator requires
//!   mutual authentication: the server's token must complete the context.
//! - [`GssSession`]: WinRM message encryption with the established context (`gss_wrap_iov`
//!   with a HEADER, the DATA encrypted in place and a PADDING buffer, as MS-WSMV 2.2.9.1.2,
//!   pykerberos and pyspnego do; unwrapped with HEADER, DATA and an empty DATA buffer).
//!
//! Where MIT krb5 finds things is the process environment: `KRB5_CONFIG` (realm and KDC),
//! `KRB5CCNAME` (ticket cache), `KRB5_CLIENT_KTNAME` (client keytab: initial tickets are
//! obtained and refreshed from it), `KRB5_KTNAME` (acceptor keytab). [`ProcessEnv`] computes
//! these from a configuration (writing a private `krb5.conf` and a keytab decoded from base64
//! when needed); a program applies them by starting itself again with
//! [`ProcessEnv::reexec_if_needed`], since the environment of a running process cannot be
//! changed safely.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libgssapi::context::{ClientCtx, CtxFlags, SecurityContext, ServerCtx};
use libgssapi::credential::{Cred, CredUsage};
use libgssapi::error::MajorFlags;
use libgssapi::name::Name;
use libgssapi::oid::{GSS_MECH_KRB5, GSS_MECH_SPNEGO, GSS_NT_KRB5_PRINCIPAL, OidSet};
use libgssapi::util::{GssIov, GssIovType};

use crate::secret::Secret;

/// Credentials closer than this to their end are acquired again before a handshake.
pub const RENEW_MARGIN: Duration = Duration::from_secs(300);

/// Why a Kerberos step failed. Messages name the principal or SPN involved, never a secret.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum KerberosError {
    /// No credentials for the client principal (bad keytab, wrong password, empty cache).
    #[error("kerberos: no credentials for {principal}: {detail}")]
    Credentials {
        /// The client principal, or "the default principal".
        principal: String,
        /// GSSAPI's explanation, with a hint when one is known.
        detail: String,
    },
    /// The security context for the service could not be started or completed.
    #[error("kerberos: authentication to {spn} failed: {detail}")]
    Context {
        /// The service principal that was asked for.
        spn: String,
        /// GSSAPI's explanation, with a hint when one is known.
        detail: String,
    },
    /// The server did not prove its identity (no or incomplete mutual-authentication token).
    #[error("kerberos: {spn} did not complete mutual authentication")]
    MutualAuth {
        /// The service principal that was asked for.
        spn: String,
    },
    /// Wrapping or unwrapping a message failed.
    #[error("kerberos: message protection failed: {0}")]
    Message(String),
    /// The acceptor could not accept a client's token.
    #[error("kerberos: token refused: {0}")]
    Accept(String),
    /// The Kerberos environment could not be prepared (files, invalid settings).
    #[error("kerberos: {0}")]
    Setup(String),
}

impl KerberosError {
    /// Whether the error says the credentials (the ticket) expired, so acquiring them again
    /// may help.
    pub fn is_expired(&self) -> bool {
        match self {
            KerberosError::Credentials { detail, .. }
            | KerberosError::Context { detail, .. }
            | KerberosError::Message(detail) => detail.contains("expired"),
            _ => false,
        }
    }
}

/// GSSAPI's message, with a hint for the causes operators meet most.
fn explain(err: &libgssapi::error::Error) -> String {
    let text = err.to_string();
    let lower = text.to_lowercase();
    let hint = if lower.contains("clock skew") {
        Some(
            "the clocks of this machine, the KDC and the host differ by more than the allowed \
             skew (5 minutes by default): synchronise them (NTP)",
        )
    } else if lower.contains("not found in kerberos database") {
        Some("the KDC knows no such principal: check the SPN (setspn -L) and the realm")
    } else if lower.contains("preauthentication failed")
        || lower.contains("decrypt integrity check failed")
        || lower.contains("password incorrect")
    {
        Some("wrong password or a keytab whose keys do not match the KDC (stale kvno)")
    } else if lower.contains("no key table entry") || lower.contains("key table file") {
        Some("the keytab has no key for this principal")
    } else if lower.contains("cannot find kdc") || lower.contains("cannot contact any kdc") {
        Some("no KDC reachable for the realm: set the KDC and realm overrides")
    } else if err.major.contains(MajorFlags::GSS_S_CREDENTIALS_EXPIRED)
        || err.major.contains(MajorFlags::GSS_S_CONTEXT_EXPIRED)
    {
        Some("the ticket expired")
    } else {
        None
    };
    let text = text.trim().to_owned();
    match hint {
        Some(hint) => format!("{text}; {hint}"),
        None => text,
    }
}

/// The HTTP authentication scheme a client uses for Kerberos.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KerberosScheme {
    /// `Authorization: Kerberos` with a raw Kerberos token; encrypted bodies announce
    /// `application/HTTP-Kerberos-session-encrypted`.
    #[default]
    Kerberos,
    /// `Authorization: Negotiate` with an SPNEGO token carrying Kerberos; encrypted bodies
    /// announce `application/HTTP-SPNEGO-session-encrypted`.
    Negotiate,
}

impl KerberosScheme {
    /// The scheme's name in `Authorization` and `WWW-Authenticate`.
    pub fn header_name(self) -> &'static str {
        match self {
            KerberosScheme::Kerberos => "Kerberos",
            KerberosScheme::Negotiate => "Negotiate",
        }
    }

    /// The `protocol` of encrypted bodies under this scheme.
    pub fn protocol(self) -> &'static str {
        match self {
            KerberosScheme::Kerberos => crate::framing::PROTOCOL_KERBEROS,
            KerberosScheme::Negotiate => crate::framing::PROTOCOL_SPNEGO,
        }
    }
}

/// Credentials shared by every clone of one [`KerberosAuth`].
#[derive(Default)]
struct CredCache {
    cred: Mutex<Option<Cred>>,
}

/// How a client authenticates with Kerberos.
#[derive(Clone)]
pub struct KerberosAuth {
    /// Client principal (`user@REALM`); `None` uses the default principal of the ticket cache.
    pub principal: Option<String>,
    /// Password of `principal`; `None` uses the ticket cache or the client keytab of the
    /// environment (`KRB5_CLIENT_KTNAME`).
    pub password: Option<Secret>,
    /// Service principal; `None` means `HTTP/<host of the endpoint>` (with `@realm` when a
    /// realm is set).
    pub spn: Option<String>,
    /// Realm appended to the default service principal.
    pub realm: Option<String>,
    /// Ask for a forwardable TGT to be delegated to the host (second hop).
    pub delegate: bool,
    /// The HTTP scheme.
    pub scheme: KerberosScheme,
    /// NTLM credentials (user name, password) for a connection on which Kerberos cannot
    /// start: no ticket can be had for the host's service principal (unknown SPN, no KDC
    /// reachable, no usable credentials). Only with [`KerberosScheme::Negotiate`], as SPNEGO
    /// on Windows falls back when NTLM is allowed; `None` (the default) never uses NTLM. A
    /// server that refuses the Kerberos token is never retried with NTLM (that would be a
    /// downgrade an attacker could force).
    pub ntlm_fallback: Option<(String, Secret)>,
    cache: Arc<CredCache>,
}

impl KerberosAuth {
    /// Kerberos from the ticket cache (or client keytab) of the environment, for `principal`
    /// (`None`: the cache's default principal).
    pub fn new(principal: Option<String>) -> Self {
        Self {
            principal,
            password: None,
            spn: None,
            realm: None,
            delegate: false,
            scheme: KerberosScheme::Kerberos,
            ntlm_fallback: None,
            cache: Arc::default(),
        }
    }

    /// The principal for error messages.
    pub fn principal_label(&self) -> &str {
        self.principal.as_deref().unwrap_or("the default principal")
    }

    /// The service principal for `host`.
    pub fn spn_for(&self, host: &str) -> String {
        if let Some(spn) = &self.spn {
            return spn.clone();
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        match &self.realm {
            Some(realm) => format!("HTTP/{host}@{realm}"),
            None => format!("HTTP/{host}"),
        }
    }

    fn acquire(&self) -> Result<Cred, KerberosError> {
        let credentials = |err: libgssapi::error::Error| KerberosError::Credentials {
            principal: self.principal_label().to_owned(),
            detail: explain(&err),
        };
        // SPNEGO needs credentials acquired for itself (it wraps the Kerberos ones).
        let mech = match self.scheme {
            KerberosScheme::Kerberos => GSS_MECH_KRB5,
            KerberosScheme::Negotiate => GSS_MECH_SPNEGO,
        };
        let mechs = mech_set(mech).map_err(credentials)?;
        let name = match &self.principal {
            Some(p) => {
                Some(Name::new(p.as_bytes(), Some(GSS_NT_KRB5_PRINCIPAL)).map_err(credentials)?)
            }
            None => None,
        };
        let cred = match &self.password {
            Some(password) => Cred::acquire_with_password(
                name.as_ref(),
                password.expose(),
                None,
                CredUsage::Initiate,
                Some(&mechs),
            ),
            None => Cred::acquire(name.as_ref(), None, CredUsage::Initiate, Some(&mechs)),
        }
        .map_err(credentials)?;
        // A cache whose TGT already expired yields a credential with no lifetime left.
        match cred.lifetime() {
            Ok(left) if left.is_zero() => Err(KerberosError::Credentials {
                principal: self.principal_label().to_owned(),
                detail: "the ticket expired; run kinit again or give a keytab or password"
                    .to_owned(),
            }),
            _ => Ok(cred),
        }
    }

    /// The credentials to start a context with: the shared ones, acquired again when they are
    /// missing, close to expiry or `force`d (after an expiry error).
    pub(crate) fn credentials(&self, force: bool) -> Result<Cred, KerberosError> {
        let mut slot = self.cache.cred.lock().unwrap_or_else(|e| e.into_inner());
        if !force
            && let Some(cred) = slot.as_ref()
            && cred.lifetime().is_ok_and(|left| left > RENEW_MARGIN)
        {
            return Ok(cred.clone());
        }
        let cred = self.acquire()?;
        *slot = Some(cred.clone());
        Ok(cred)
    }
}

impl std::fmt::Debug for KerberosAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KerberosAuth")
            .field("principal", &self.principal)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("spn", &self.spn)
            .field("realm", &self.realm)
            .field("delegate", &self.delegate)
            .field("scheme", &self.scheme)
            .field(
                "ntlm_fallback",
                &self.ntlm_fallback.as_ref().map(|(user, _)| user),
            )
            .finish()
    }
}

impl PartialEq for KerberosAuth {
    fn eq(&self, other: &Self) -> bool {
        self.principal == other.principal
            && self.password == other.password
            && self.spn == other.spn
            && self.realm == other.realm
            && self.delegate == other.delegate
            && self.scheme == other.scheme
            && self.ntlm_fallback == other.ntlm_fallback
    }
}

impl Eq for KerberosAuth {}

fn mech_set(mech: libgssapi::oid::Oid<'static>) -> Result<OidSet, libgssapi::error::Error> {
    OidSet::singleton(mech)
}

/// The client end of one connection's security context, until it is established.
///
/// GSSAPI contexts are used by one caller at a time; the mutex makes the owner `Sync` (a
/// connection is shared by reference across an `await`) and is never contended.
pub struct KerberosInitiator {
    ctx: Mutex<ClientCtx>,
    spn: String,
    scheme: KerberosScheme,
    /// The TLS channel's `tls-server-end-point` application data, given to every step.
    channel_bindings: Option<Vec<u8>>,
}

impl std::fmt::Debug for KerberosInitiator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KerberosInitiator")
            .field("spn", &self.spn)
            .field("scheme", &self.scheme)
            .finish_non_exhaustive()
    }
}

impl KerberosInitiator {
    /// Starts a context to `host` (or the configured SPN) and returns the first token.
    /// `force_credentials` acquires the client's credentials again (after an expiry).
    /// `channel_bindings` (HTTPS) bind the context to the TLS channel: their application data
    /// goes to `gss_init_sec_context`, which puts the MD5 of the bindings structure in the
    /// authenticator checksum.
    pub fn start(
        auth: &KerberosAuth,
        host: &str,
        force_credentials: bool,
        channel_bindings: Option<&crate::channel_bindings::ChannelBindings>,
    ) -> Result<(Self, Vec<u8>), KerberosError> {
        let spn = auth.spn_for(host);
        let context = |err: libgssapi::error::Error| KerberosError::Context {
            spn: spn.clone(),
            detail: explain(&err),
        };
        let cred = auth.credentials(force_credentials)?;
        let target = Name::new(spn.as_bytes(), Some(GSS_NT_KRB5_PRINCIPAL)).map_err(context)?;
        let mut flags = CtxFlags::GSS_C_MUTUAL_FLAG
            | CtxFlags::GSS_C_SEQUENCE_FLAG
            | CtxFlags::GSS_C_REPLAY_FLAG
            | CtxFlags::GSS_C_CONF_FLAG
            | CtxFlags::GSS_C_INTEG_FLAG;
        if auth.delegate {
            flags |= CtxFlags::GSS_C_DELEG_FLAG;
        }
        let mech = match auth.scheme {
            KerberosScheme::Kerberos => GSS_MECH_KRB5,
            KerberosScheme::Negotiate => GSS_MECH_SPNEGO,
        };
        let mut ctx = ClientCtx::new(Some(cred), target, flags, Some(mech));
        let channel_bindings = channel_bindings.map(|c| c.application_data().to_vec());
        let token = ctx
            .step(None, channel_bindings.as_deref())
            .map_err(context)?;
        let token = token.map(|t| t.to_vec()).unwrap_or_default();
        Ok((
            Self {
                ctx: Mutex::new(ctx),
                spn,
                scheme: auth.scheme,
                channel_bindings,
            },
            token,
        ))
    }

    /// The service principal asked for.
    pub fn spn(&self) -> &str {
        &self.spn
    }

    /// Feeds the server's token. `Ok(Some(token))` is another token to send (SPNEGO);
    /// `Ok(None)` means the context is established and mutual authentication verified.
    pub fn step(&mut self, token: Option<&[u8]>) -> Result<Option<Vec<u8>>, KerberosError> {
        let Some(token) = token else {
            return Err(KerberosError::MutualAuth {
                spn: self.spn.clone(),
            });
        };
        let ctx = self.ctx.get_mut().unwrap_or_else(|e| e.into_inner());
        let out = ctx
            .step(Some(token), self.channel_bindings.as_deref())
            .map_err(|err| KerberosError::Context {
                spn: self.spn.clone(),
                detail: explain(&err),
            })?;
        if ctx.is_complete() {
            return Ok(None);
        }
        match out {
            Some(out) if !out.is_empty() => Ok(Some(out.to_vec())),
            _ => Err(KerberosError::MutualAuth {
                spn: self.spn.clone(),
            }),
        }
    }

    /// Whether the context is established.
    pub fn is_complete(&self) -> bool {
        self.ctx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_complete()
    }

    /// The established session; checks that mutual authentication happened.
    pub fn into_session(self) -> Result<GssSession, KerberosError> {
        let ctx = self.ctx.into_inner().unwrap_or_else(|e| e.into_inner());
        let mutual = ctx
            .flags()
            .is_ok_and(|f| f.contains(CtxFlags::GSS_C_MUTUAL_FLAG));
        if !ctx.is_complete() || !mutual {
            return Err(KerberosError::MutualAuth { spn: self.spn });
        }
        Ok(GssSession {
            ctx: Mutex::new(Box::new(ctx)),
            protocol: self.scheme.protocol(),
        })
    }
}

/// An established context's message protection, WinRM style.
pub struct GssSession {
    ctx: Mutex<Box<dyn SecurityContext + Send>>,
    protocol: &'static str,
}

impl std::fmt::Debug for GssSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GssSession")
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}

/// A wrapped message: the GSS header, then the encrypted data followed by any padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wrapped {
    /// The GSS wrap header (its length precedes it in the encrypted body).
    pub header: Vec<u8>,
    /// The encrypted data and the padding.
    pub sealed: Vec<u8>,
}

impl GssSession {
    /// The `protocol` of this session's encrypted bodies.
    pub fn protocol(&self) -> &'static str {
        self.protocol
    }

    /// Answers in the protocol the peer used (the acceptor side follows the client).
    pub fn set_protocol(&mut self, protocol: &'static str) {
        self.protocol = protocol;
    }

    /// Whether the context outlived the ticket it was made with. MIT krb5 keeps wrapping
    /// with such a context; Windows refuses its messages, so the client authenticates the
    /// connection again and the WS-Man endpoint answers `401`.
    pub fn is_expired(&self) -> bool {
        let ctx = self.ctx.lock().unwrap_or_else(|e| e.into_inner());
        match ctx.lifetime() {
            Ok(left) => left.is_zero(),
            Err(e) => e.major.contains(MajorFlags::GSS_S_CONTEXT_EXPIRED),
        }
    }

    /// Encrypts one message.
    pub fn wrap(&mut self, data: &[u8]) -> Result<Wrapped, KerberosError> {
        let mut buffer = data.to_vec();
        let (header, padding) = {
            let mut iov = [
                GssIov::new_alloc(GssIovType::Header),
                GssIov::new(GssIovType::Data, &mut buffer),
                GssIov::new_alloc(GssIovType::Padding),
            ];
            self.ctx
                .get_mut()
                .unwrap_or_else(|e| e.into_inner())
                .wrap_iov(true, &mut iov)
                .map_err(|e| KerberosError::Message(explain(&e)))?;
            (iov[0].to_vec(), iov[2].to_vec())
        };
        buffer.extend_from_slice(&padding);
        Ok(Wrapped {
            header,
            sealed: buffer,
        })
    }

    /// Decrypts one message and checks its integrity.
    pub fn unwrap(&mut self, header: &[u8], sealed: &[u8]) -> Result<Vec<u8>, KerberosError> {
        let mut header = header.to_vec();
        let mut data = sealed.to_vec();
        let mut empty: [u8; 0] = [];
        let mut iov = [
            GssIov::new(GssIovType::Header, &mut header),
            GssIov::new(GssIovType::Data, &mut data),
            GssIov::new(GssIovType::Data, &mut empty),
        ];
        self.ctx
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .unwrap_iov(&mut iov)
            .map_err(|e| KerberosError::Message(explain(&e)))?;
        Ok(iov[1].to_vec())
    }
}

/// The server end of one connection's security context (keytab from `KRB5_KTNAME`).
pub struct KerberosAcceptor {
    ctx: Mutex<ServerCtx>,
    channel_bindings: Option<Vec<u8>>,
    require_channel_bindings: bool,
}

/// `GSS_C_CHANNEL_BOUND_FLAG` (MIT krb5 1.19 and later): the initiator's channel bindings
/// matched the acceptor's. libgssapi's `CtxFlags` has no name for it; the bit is kept.
pub const GSS_C_CHANNEL_BOUND_FLAG: u32 = 0x800;

impl std::fmt::Debug for KerberosAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KerberosAcceptor").finish_non_exhaustive()
    }
}

/// What an acceptor step produced.
#[derive(Debug)]
pub enum Accepted {
    /// Another token for the client; the context is not established yet.
    Continue(Vec<u8>),
    /// Established: the client principal, the session, and the final token for the client
    /// (the mutual-authentication token), if any.
    Done {
        /// The client principal (`user@REALM`).
        principal: String,
        /// Message protection.
        session: GssSession,
        /// The token to send back (`WWW-Authenticate`).
        token: Option<Vec<u8>>,
    },
}

impl KerberosAcceptor {
    /// Checks that the acceptor keytab of the environment is usable (at start-up).
    pub fn check_keytab() -> Result<(), KerberosError> {
        Cred::acquire(None, None, CredUsage::Accept, None)
            .map(|_| ())
            .map_err(|e| KerberosError::Setup(format!("acceptor keytab unusable: {}", explain(&e))))
    }

    /// A fresh acceptor.
    pub fn new() -> Self {
        Self {
            ctx: Mutex::new(ServerCtx::new(None)),
            channel_bindings: None,
            require_channel_bindings: false,
        }
    }

    /// Binds the context to a TLS channel: a client that sends other bindings is refused by
    /// GSSAPI (`GSS_S_BAD_BINDINGS`); with `required`, a client that sends none is refused
    /// too (MIT krb5 accepts a client without bindings and reports the binding with
    /// [`GSS_C_CHANNEL_BOUND_FLAG`], which is what is checked).
    #[must_use]
    pub fn with_channel_bindings(
        mut self,
        bindings: Option<&crate::channel_bindings::ChannelBindings>,
        required: bool,
    ) -> Self {
        self.channel_bindings = bindings.map(|c| c.application_data().to_vec());
        self.require_channel_bindings = required;
        self
    }

    /// Processes one client token.
    pub fn step(&mut self, token: &[u8]) -> Result<Accepted, KerberosError> {
        let ctx = self.ctx.get_mut().unwrap_or_else(|e| e.into_inner());
        let out = ctx
            .step(token, self.channel_bindings.as_deref())
            .map_err(|e| KerberosError::Accept(explain(&e)))?;
        let out = out.map(|b| b.to_vec()).filter(|b| !b.is_empty());
        if !ctx.is_complete() {
            return match out {
                Some(out) => Ok(Accepted::Continue(out)),
                None => Err(KerberosError::Accept(
                    "no token to continue with".to_owned(),
                )),
            };
        }
        if self.require_channel_bindings && self.channel_bindings.is_some() {
            let bound = ctx
                .flags()
                .is_ok_and(|f| f.bits() & GSS_C_CHANNEL_BOUND_FLAG != 0);
            if !bound {
                return Err(KerberosError::Accept(
                    "channel bindings are required and the client sent none".to_owned(),
                ));
            }
        }
        let principal = ctx
            .source_name()
            .map_err(|e| KerberosError::Accept(explain(&e)))?
            .to_string();
        let ctx = std::mem::replace(ctx, ServerCtx::new(None));
        Ok(Accepted::Done {
            principal,
            session: GssSession {
                ctx: Mutex::new(Box::new(ctx)),
                protocol: crate::framing::PROTOCOL_KERBEROS,
            },
            token: out,
        })
    }
}

impl Default for KerberosAcceptor {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether `host` is an IP address (Kerberos needs a DNS name for the service principal).
pub fn is_ip_address(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.parse::<std::net::IpAddr>().is_ok()
}

/// Where the Kerberos library should find its configuration, cache and keytabs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KerberosSettings {
    /// Realm for the generated `krb5.conf` (its `default_realm`).
    pub realm: Option<String>,
    /// KDC addresses (`host` or `host:port`) of `realm`; needs `realm`.
    pub kdcs: Vec<String>,
    /// Further realms and their KDCs (hosts in other realms), in the same `krb5.conf`.
    pub other_realms: Vec<(String, Vec<String>)>,
    /// Client keytab file.
    pub keytab: Option<PathBuf>,
    /// Client keytab as base64 (written to a private file).
    pub keytab_b64: Option<Secret>,
    /// Acceptor keytab file (servers).
    pub acceptor_keytab: Option<PathBuf>,
}

/// The environment variables for MIT krb5 that a [`KerberosSettings`] needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessEnv {
    /// Variables to set, in order.
    pub vars: Vec<(String, OsString)>,
}

/// Set in the environment of a process started again by [`ProcessEnv::reexec_if_needed`], so
/// that it does not loop.
pub const REEXEC_MARKER: &str = "AETHERV_KRB5_ENV_APPLIED";

impl ProcessEnv {
    /// Computes the variables, writing a private `krb5.conf` and the decoded keytab under
    /// `dir` when the settings need them.
    pub fn prepare(settings: &KerberosSettings, dir: &Path) -> Result<Self, KerberosError> {
        use base64::Engine as _;
        let setup = |what: &str, e: std::io::Error| KerberosError::Setup(format!("{what}: {e}"));
        let mut vars = Vec::new();
        if !settings.kdcs.is_empty() && settings.realm.is_none() {
            return Err(KerberosError::Setup(
                "a KDC override needs the realm too".to_owned(),
            ));
        }
        if let Some(realm) = &settings.realm {
            let realms = std::iter::once((realm, &settings.kdcs))
                .chain(settings.other_realms.iter().map(|(r, k)| (r, k)));
            let bad = |v: &str| {
                v.is_empty() || v.contains(char::is_whitespace) || v.contains(['{', '}', '='])
            };
            for (realm, kdcs) in realms.clone() {
                if bad(realm) {
                    return Err(KerberosError::Setup(format!("invalid realm {realm:?}")));
                }
                if let Some(kdc) = kdcs.iter().find(|k| bad(k)) {
                    return Err(KerberosError::Setup(format!("invalid KDC address {kdc:?}")));
                }
            }
            std::fs::create_dir_all(dir)
                .map_err(|e| setup("creating the kerberos directory", e))?;
            let mut conf = format!(
                "[libdefaults]\n    default_realm = {realm}\n    dns_lookup_kdc = {}\n    \
                 dns_canonicalize_hostname = false\n    rdns = false\n    forwardable = true\n",
                settings.kdcs.is_empty()
            );
            conf.push_str("\n[realms]\n");
            let mut written = std::collections::BTreeSet::new();
            for (realm, kdcs) in realms {
                if !written.insert(realm.to_owned()) {
                    continue;
                }
                conf.push_str(&format!("    {realm} = {{\n"));
                for kdc in kdcs {
                    conf.push_str(&format!("        kdc = {kdc}\n"));
                }
                conf.push_str("    }\n");
            }
            let path = dir.join("krb5.conf");
            std::fs::write(&path, conf).map_err(|e| setup("writing krb5.conf", e))?;
            vars.push(("KRB5_CONFIG".to_owned(), path.into_os_string()));
        }
        let client_keytab = match (&settings.keytab, &settings.keytab_b64) {
            (Some(_), Some(_)) => {
                return Err(KerberosError::Setup(
                    "give the keytab as a file or as base64, not both".to_owned(),
                ));
            }
            (Some(path), None) => Some(path.clone()),
            (None, Some(b64)) => {
                let cleaned: String = b64.expose().split_whitespace().collect();
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(cleaned.as_bytes())
                    .map_err(|_| KerberosError::Setup("the keytab base64 is invalid".to_owned()))?;
                if bytes.first() != Some(&5) {
                    return Err(KerberosError::Setup(
                        "the decoded keytab is not a keytab (it must start with 0x05)".to_owned(),
                    ));
                }
                std::fs::create_dir_all(dir)
                    .map_err(|e| setup("creating the kerberos directory", e))?;
                let path = dir.join("client.keytab");
                write_private(&path, &bytes).map_err(|e| setup("writing the keytab", e))?;
                Some(path)
            }
            (None, None) => None,
        };
        if let Some(path) = client_keytab {
            let mut value = OsString::from("FILE:");
            value.push(path.as_os_str());
            vars.push(("KRB5_CLIENT_KTNAME".to_owned(), value));
            // A private in-memory cache: tickets from the keytab never touch the disk.
            vars.push(("KRB5CCNAME".to_owned(), OsString::from("MEMORY:aetherv")));
        }
        if let Some(path) = &settings.acceptor_keytab {
            let mut value = OsString::from("FILE:");
            value.push(path.as_os_str());
            vars.push(("KRB5_KTNAME".to_owned(), value));
        }
        Ok(Self { vars })
    }

    /// Whether the current process environment already has every variable.
    pub fn is_applied(&self) -> bool {
        self.vars
            .iter()
            .all(|(name, value)| std::env::var_os(name).as_ref() == Some(value))
    }

    /// Applies the variables to a child process.
    pub fn apply_to(&self, command: &mut std::process::Command) {
        for (name, value) in &self.vars {
            command.env(name, value);
        }
    }

    /// When the environment lacks a variable, replaces this process by a fresh start of the
    /// same program with the same arguments and the variables set (only returns on failure).
    /// Call it at the very start of `main`, before any thread is started.
    pub fn reexec_if_needed(&self) -> Result<(), KerberosError> {
        if self.is_applied() {
            return Ok(());
        }
        if std::env::var_os(REEXEC_MARKER).is_some() {
            return Err(KerberosError::Setup(
                "the kerberos environment could not be applied".to_owned(),
            ));
        }
        let exe = std::env::current_exe()
            .map_err(|e| KerberosError::Setup(format!("cannot find this program: {e}")))?;
        let mut command = std::process::Command::new(exe);
        command.args(std::env::args_os().skip(1));
        self.apply_to(&mut command);
        command.env(REEXEC_MARKER, "1");
        use std::os::unix::process::CommandExt as _;
        let err = command.exec();
        Err(KerberosError::Setup(format!(
            "cannot start again with the kerberos environment: {err}"
        )))
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn default_spn_uses_the_host_and_realm() {
        let mut auth = KerberosAuth::new(Some("svc@LAB.TEST".to_owned()));
        assert_eq!(auth.spn_for("hv01.lab.test"), "HTTP/hv01.lab.test");
        auth.realm = Some("LAB.TEST".to_owned());
        assert_eq!(auth.spn_for("hv01.lab.test"), "HTTP/hv01.lab.test@LAB.TEST");
        auth.spn = Some("WSMAN/hv01".to_owned());
        assert_eq!(auth.spn_for("hv01.lab.test"), "WSMAN/hv01");
    }

    #[test]
    fn debug_never_shows_the_password() {
        let mut auth = KerberosAuth::new(Some("svc@LAB.TEST".to_owned()));
        auth.password = Some(Secret::new("Sup3r-secret".to_owned()));
        let shown = format!("{auth:?}");
        assert!(!shown.contains("Sup3r-secret"), "{shown}");
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn ip_hosts_are_recognised() {
        assert!(is_ip_address("10.0.0.5"));
        assert!(is_ip_address("[::1]"));
        assert!(!is_ip_address("hv01.lab.test"));
    }

    #[test]
    fn prepare_writes_krb5_conf_and_keytab() {
        use base64::Engine as _;
        let dir = std::env::temp_dir().join(format!("aetherv-krb-test-{}", std::process::id()));
        let settings = KerberosSettings {
            realm: Some("LAB.TEST".to_owned()),
            kdcs: vec!["127.0.0.1:8888".to_owned()],
            keytab_b64: Some(Secret::new(
                base64::engine::general_purpose::STANDARD.encode([5u8, 2, 0, 0]),
            )),
            ..KerberosSettings::default()
        };
        let env = ProcessEnv::prepare(&settings, &dir).unwrap();
        let names: Vec<&str> = env.vars.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["KRB5_CONFIG", "KRB5_CLIENT_KTNAME", "KRB5CCNAME"]);
        let conf = std::fs::read_to_string(dir.join("krb5.conf")).unwrap();
        assert!(conf.contains("default_realm = LAB.TEST"), "{conf}");
        assert!(conf.contains("kdc = 127.0.0.1:8888"), "{conf}");
        assert_eq!(
            std::fs::read(dir.join("client.keytab")).unwrap(),
            [5, 2, 0, 0]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn prepare_refuses_bad_settings() {
        let dir = std::env::temp_dir().join("aetherv-krb-test-unused");
        let kdc_without_realm = KerberosSettings {
            kdcs: vec!["kdc.lab.test".to_owned()],
            ..KerberosSettings::default()
        };
        let err = ProcessEnv::prepare(&kdc_without_realm, &dir).unwrap_err();
        assert!(err.to_string().contains("realm"), "{err}");
        let not_a_keytab = KerberosSettings {
            keytab_b64: Some(Secret::new("aGVsbG8=".to_owned())),
            ..KerberosSettings::default()
        };
        let err = ProcessEnv::prepare(&not_a_keytab, &dir).unwrap_err();
        assert!(err.to_string().contains("not a keytab"), "{err}");
        let not_base64 = KerberosSettings {
            keytab_b64: Some(Secret::new("***".to_owned())),
            ..KerberosSettings::default()
        };
        let err = ProcessEnv::prepare(&not_base64, &dir).unwrap_err();
        assert!(err.to_string().contains("base64"), "{err}");
    }

    #[test]
    fn gss_bodies_round_trip_through_the_framing() {
        let body = crate::framing::encode_gss(
            crate::framing::PROTOCOL_KERBEROS,
            &[7u8; 60],
            b"ciphertext",
            10,
        );
        let decoded = crate::framing::decode_gss(&body).unwrap();
        assert_eq!(decoded.signature, &[7u8; 60]);
        assert_eq!(decoded.sealed, b"ciphertext");
        assert_eq!(decoded.original_length, 10);
        let ct = crate::framing::content_type_for(crate::framing::PROTOCOL_KERBEROS);
        assert_eq!(
            crate::framing::encrypted_protocol(&ct),
            Some(crate::framing::PROTOCOL_KERBEROS)
        );
        assert_eq!(
            crate::framing::encrypted_protocol(&crate::framing::content_type()),
            Some(crate::framing::PROTOCOL_SPNEGO)
        );
        assert_eq!(
            crate::framing::encrypted_protocol("application/soap+xml"),
            None
        );
        let mut truncated = body.clone();
        truncated.truncate(body.len() - 30);
        assert!(crate::framing::decode_gss(&truncated).is_err());
    }
}
