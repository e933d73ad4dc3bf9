//! The document as submitted, before validation: every field is read as any scalar (or, for
//! secrets, straight into a [`Secret`]), so a wrong type is one problem among the others
//! instead of the end of parsing.

use std::fmt;

use aetherv_winrm::Secret;
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::check::quoted;

/// The job schema as submitted, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a job request mapping")]
pub(super) struct RawJob {
    pub(super) schema_version: Option<Scalar>,
    pub(super) target_host: Option<Scalar>,
    pub(super) values: Option<RawValues>,
    pub(super) target_cluster: Option<Scalar>,
}

/// `values` as submitted (also the flat create body, which adds `hyperv_host`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping of provisioning values")]
pub(super) struct RawValues {
    pub(super) hyperv_host: Option<Scalar>,
    pub(super) target_cluster: Option<Scalar>,
    pub(super) vm_name: Option<Scalar>,
    pub(super) image_name: Option<Scalar>,
    pub(super) gb_ram: Option<Scalar>,
    pub(super) cpu_cores: Option<Scalar>,
    pub(super) disk_size_gb: Option<Scalar>,
    pub(super) guest_la_uid: Option<Scalar>,
    pub(super) guest_la_pw: Option<SecretScalar>,
    pub(super) guest_v4_ipaddr: Option<Scalar>,
    pub(super) guest_v4_cidrprefix: Option<Scalar>,
    pub(super) guest_v4_defaultgw: Option<Scalar>,
    pub(super) guest_v4_dns1: Option<Scalar>,
    pub(super) guest_v4_dns2: Option<Scalar>,
    pub(super) guest_net_dnssuffix: Option<Scalar>,
    pub(super) vlan_id: Option<Scalar>,
    pub(super) guest_domain_jointarget: Option<Scalar>,
    pub(super) guest_domain_joinuid: Option<Scalar>,
    pub(super) guest_domain_joinpw: Option<SecretScalar>,
    pub(super) guest_domain_joinou: Option<Scalar>,
    pub(super) cnf_ansible_ssh_user: Option<Scalar>,
    pub(super) cnf_ansible_ssh_key: Option<Scalar>,
    pub(super) vm_clustered: Option<Scalar>,
    pub(super) os_family: Option<Scalar>,
    pub(super) network: Option<Scalar>,
    pub(super) storage_class: Option<Scalar>,
}

/// Any scalar a field can hold; type checking happens in validation so that a wrong type is
/// one problem among all the others instead of the end of parsing.
#[derive(Debug)]
pub(super) enum Scalar {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    /// A list or mapping where a scalar belongs.
    Other(&'static str),
}

impl Scalar {
    pub(super) fn describe(&self) -> String {
        match self {
            Self::Null => "null".to_owned(),
            Self::Bool(b) => format!("boolean {b}"),
            Self::Int(i) => format!("number {i}"),
            Self::Float(f) => format!("number {f}"),
            Self::Str(s) => format!("string {}", quoted(s)),
            Self::Other(kind) => (*kind).to_owned(),
        }
    }
}

/// A secret field as submitted: the string goes straight into a [`Secret`]; for anything else
/// only the kind is kept, so no message can ever echo it.
#[derive(Debug)]
pub(super) enum SecretScalar {
    Null,
    Str(Secret),
    Other(&'static str),
}

pub(super) struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, number or boolean")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> std::result::Result<Scalar, E> {
        Ok(Scalar::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<Scalar, E> {
        Ok(Scalar::Int(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<Scalar, E> {
        Ok(Scalar::Int(v.into()))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> std::result::Result<Scalar, E> {
        Ok(Scalar::Int(v))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> std::result::Result<Scalar, E> {
        Ok(i128::try_from(v).map_or(Scalar::Other("a number too large"), Scalar::Int))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> std::result::Result<Scalar, E> {
        Ok(Scalar::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Scalar, E> {
        Ok(Scalar::Str(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> std::result::Result<Scalar, E> {
        Ok(Scalar::Str(v))
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> std::result::Result<Scalar, E> {
        Ok(Scalar::Other("bytes"))
    }

    fn visit_none<E: de::Error>(self) -> std::result::Result<Scalar, E> {
        Ok(Scalar::Null)
    }

    fn visit_unit<E: de::Error>(self) -> std::result::Result<Scalar, E> {
        Ok(Scalar::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Scalar, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<Scalar, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Scalar, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other("a list"))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Scalar, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other("a mapping"))
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

pub(super) struct SecretVisitor;

impl<'de> Visitor<'de> for SecretVisitor {
    type Value = SecretScalar;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> std::result::Result<SecretScalar, E> {
        Ok(SecretScalar::Other("a boolean"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> std::result::Result<SecretScalar, E> {
        Ok(SecretScalar::Other("a number"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> std::result::Result<SecretScalar, E> {
        Ok(SecretScalar::Other("a number"))
    }

    fn visit_i128<E: de::Error>(self, _: i128) -> std::result::Result<SecretScalar, E> {
        Ok(SecretScalar::Other("a number"))
    }

    fn visit_u128<E: de::Error>(self, _: u128) -> std::result::Result<SecretScalar, E> {
        Ok(SecretScalar::Other("a number"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> std::result::Result<SecretScalar, E> {
        Ok(SecretScalar::Other("a number"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<SecretScalar, E> {
        Ok(SecretScalar::Str(Secret::new(v)))
    }

    fn visit_string<E: de::Error>(self, v: String) -> std::result::Result<SecretScalar, E> {
        Ok(SecretScalar::Str(Secret::new(v)))
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> std::result::Result<SecretScalar, E> {
        Ok(SecretScalar::Other("bytes"))
    }

    fn visit_none<E: de::Error>(self) -> std::result::Result<SecretScalar, E> {
        Ok(SecretScalar::Null)
    }

    fn visit_unit<E: de::Error>(self) -> std::result::Result<SecretScalar, E> {
        Ok(SecretScalar::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> std::result::Result<SecretScalar, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<SecretScalar, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<SecretScalar, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(SecretScalar::Other("a list"))
    }

    fn visit_map<A: MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<SecretScalar, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(SecretScalar::Other("a mapping"))
    }
}

impl<'de> Deserialize<'de> for SecretScalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(SecretVisitor)
    }
}
