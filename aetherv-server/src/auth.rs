//! Authentication and authorisation: who is calling and what they may do.
//!
//! [`oidc`] validates OIDC bearer tokens and turns them into a [`Principal`] carrying the
//! highest [`Role`] the token grants. [`middleware`] authenticates HTTP requests (bearer token,
//! else the browser session) and enforces roles; [`login`] is the OIDC browser login and
//! [`session`] its signed cookies.

pub mod login;
pub mod middleware;
pub mod oidc;
pub mod session;

pub use login::{LoginConfig, LoginFlow, LoginSetupError};
pub use middleware::{Authenticator, me, require_role, required_role, required_role_at};

/// What a caller may do. Roles are ordered: admin implies writer, writer implies reader.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// May read inventory, jobs and events.
    Reader,
    /// May also start mutating jobs (provision, delete, power actions).
    Writer,
    /// May do everything.
    Admin,
}

impl Role {
    /// Whether this role includes `needed` (admin ⇒ writer ⇒ reader).
    #[must_use]
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }

    /// A short lowercase name for the role, for logs and API answers.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's `sub` claim: a stable identifier of the caller at the issuer.
    pub subject: String,
    /// A human-readable name: `preferred_username`, else `email`, when the token has one.
    pub name: Option<String>,
    /// The highest role the token grants.
    pub role: Role,
}

#[cfg(test)]
mod tests {
    use super::Role;

    #[test]
    fn roles_imply_lower_roles() {
        assert!(Role::Admin.allows(Role::Writer));
        assert!(Role::Admin.allows(Role::Reader));
        assert!(Role::Writer.allows(Role::Reader));
        assert!(!Role::Writer.allows(Role::Admin));
        assert!(!Role::Reader.allows(Role::Writer));
        assert_eq!(Role::Writer.to_string(), "writer");
    }
}
