//! Paging of `GET /api/v1/vms`: sort columns, natural order, sorted views kept per VM-set
//! generation, and keyset cursors.
//!
//! A [`View`] is every VM of one snapshot in the ascending order of one [`Column`] (ties by
//! natural name, then id). It is built once per [`Snapshot::vms_generation`] and column and
//! serves both directions; a filtered view is the positions of the matching rows in it,
//! cached per filter too. A page is then a binary search for the cursor plus the page's rows.
//!
//! A [`Cursor`] is the last row's position (sort value, name, id) and a check of the sort and
//! filters it was made for, so it never goes stale: the next page starts right after that
//! position in whatever the inventory holds now.

use std::cmp::Ordering;
use std::sync::{Arc, Mutex};

use aetherv_hyperv::ops::VmId;
use aetherv_inventory::{HostState, InventoryVm, Snapshot};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::views::VmFilter;
use crate::error::{ApiError, ApiResult};

/// Largest page.
pub const MAX_LIMIT: usize = 1000;
/// Page size when none is asked for.
pub const DEFAULT_LIMIT: usize = 100;
/// Filtered and sorted views kept at once (least recently used ones are dropped).
const CACHED_VIEWS: usize = 32;

/// A column the list can be sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Column {
    /// VM name (natural, case-insensitive).
    Name,
    /// Hyper-V state name.
    State,
    /// Host name (natural).
    Host,
    /// Cluster name (natural; none first).
    Cluster,
    /// Virtual processors.
    ProcessorCount,
    /// Startup memory.
    MemoryStartup,
    /// Assigned memory.
    MemoryAssigned,
    /// Uptime (in the order of the last VM-set change; uptime advances without one).
    Uptime,
    /// First guest-reported address (natural).
    IpAddresses,
    /// VM id.
    Id,
}

impl Column {
    /// Every column with its query name.
    pub const ALL: [(Self, &'static str); 10] = [
        (Self::Name, "name"),
        (Self::State, "state"),
        (Self::Host, "host"),
        (Self::Cluster, "cluster"),
        (Self::ProcessorCount, "processor_count"),
        (Self::MemoryStartup, "memory_startup_bytes"),
        (Self::MemoryAssigned, "memory_assigned_bytes"),
        (Self::Uptime, "uptime_seconds"),
        (Self::IpAddresses, "ip_addresses"),
        (Self::Id, "id"),
    ];

    /// The query name.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(c, _)| *c == self)
            .map_or("name", |(_, n)| n)
    }

    fn parse(text: &str) -> Option<Self> {
        Self::ALL.iter().find(|(_, n)| *n == text).map(|(c, _)| *c)
    }

    /// The raw sort value of a VM in this column.
    fn value(self, snapshot: &Snapshot, vm: &InventoryVm) -> Value {
        let v = &vm.vm;
        match self {
            Self::Name => Value::Text(v.name.clone()),
            Self::State => Value::Text(v.state.name().to_string()),
            Self::Host => Value::Text(vm.host.to_string()),
            Self::Cluster => Value::Text(
                snapshot
                    .host(&vm.host)
                    .and_then(|h| h.cluster())
                    .unwrap_or_default()
                    .to_owned(),
            ),
            Self::ProcessorCount => Value::Num(u64::from(v.processor_count)),
            Self::MemoryStartup => Value::Num(v.memory_startup_bytes),
            Self::MemoryAssigned => Value::Num(v.memory_assigned_bytes),
            Self::Uptime => Value::Num(snapshot.uptime(vm).as_secs()),
            Self::IpAddresses => Value::Text(
                v.nics
                    .iter()
                    .flat_map(|n| n.ip_addresses.iter())
                    .next()
                    .cloned()
                    .unwrap_or_default(),
            ),
            Self::Id => Value::Text(v.id.to_string()),
        }
    }
}

/// The order of a list: a column and a direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sort {
    /// The column.
    pub column: Column,
    /// Largest first.
    pub descending: bool,
}

impl Default for Sort {
    fn default() -> Self {
        Self {
            column: Column::Name,
            descending: false,
        }
    }
}

impl Sort {
    /// Parses `COL` or `-COL`; an unknown column is a 400 naming `sort`.
    pub fn parse(text: &str) -> ApiResult<Self> {
        let (descending, name) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text.strip_prefix('+').unwrap_or(text)),
        };
        let column = Column::parse(name).ok_or_else(|| {
            let names: Vec<&str> = Column::ALL.iter().map(|(_, n)| *n).collect();
            ApiError::bad_query(
                "sort",
                format!(
                    "unknown sort column {name:?}; use one of {} (prefix - for descending)",
                    names.join(", ")
                ),
            )
        })?;
        Ok(Self { column, descending })
    }

    /// The query form (`name`, `-uptime_seconds`).
    pub fn text(self) -> String {
        format!(
            "{}{}",
            if self.descending { "-" } else { "" },
            self.column.name()
        )
    }
}

/// A raw sort value, as a cursor carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
enum Value {
    Num(u64),
    Text(String),
}

/// A comparable sort key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Num(u64),
    Text(Box<[u8]>),
}

impl Value {
    fn key(&self) -> Key {
        match self {
            Self::Num(n) => Key::Num(*n),
            Self::Text(t) => Key::Text(natural_key(t)),
        }
    }
}

/// A byte string whose plain order is the natural, case-insensitive order of `text`: runs of
/// digits compare as numbers (`app-2` < `app-10`), letters without regard to case.
///
/// Each run of digits becomes `'0'`, its length without leading zeros (two bytes, big-endian)
/// and the digits; as every digit sorts after the characters below `'0'` and before those
/// above `'9'`, a number keeps its place relative to the other characters.
pub fn natural_key(text: &str) -> Box<[u8]> {
    let mut key = Vec::with_capacity(text.len() + 4);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            let mut digits = String::new();
            digits.push(c);
            while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                digits.push(d);
                chars.next();
            }
            let significant = digits.trim_start_matches('0');
            let len = u16::try_from(significant.len()).unwrap_or(u16::MAX);
            key.push(b'0');
            key.extend_from_slice(&len.to_be_bytes());
            key.extend_from_slice(significant.as_bytes());
        } else {
            let mut buf = [0_u8; 4];
            for lower in c.to_lowercase() {
                key.extend_from_slice(lower.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    key.into_boxed_slice()
}

/// Natural, case-insensitive comparison of two texts (see [`natural_key`]).
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    natural_key(a).cmp(&natural_key(b))
}

/// One VM in a view: its position only. The record itself is read from the snapshot a page is
/// served from: a view outlives the refreshes that advance uptimes (they keep the VM-set
/// generation), and holding the records it was built from would keep a second copy of every
/// running VM alive. The host's name lets a page find the record without the fleet-wide id
/// index (a VM that moves hosts starts a new VM-set generation, so it stays right).
#[derive(Debug)]
struct Row {
    key: Key,
    name_key: Box<[u8]>,
    id: VmId,
    host: Arc<str>,
}

impl Row {
    fn position(&self) -> (&Key, &[u8], VmId) {
        (&self.key, &self.name_key, self.id)
    }
}

/// Every VM of one VM-set generation in the ascending order of one column.
#[derive(Debug)]
pub struct View {
    rows: Vec<Row>,
}

impl View {
    fn build(snapshot: &Snapshot, column: Column) -> Self {
        let mut rows: Vec<Row> = snapshot
            .vms()
            .map(|vm| Row {
                key: column.value(snapshot, vm).key(),
                name_key: natural_key(&vm.vm.name),
                id: vm.vm.id,
                host: Arc::clone(&vm.host),
            })
            .collect();
        rows.sort_unstable_by(|a, b| a.position().cmp(&b.position()));
        Self { rows }
    }
}

/// The rows of a view that pass one filter (positions into the view, ascending).
#[derive(Debug)]
pub struct Filtered {
    view: Arc<View>,
    /// `None`: every row.
    positions: Option<Vec<u32>>,
}

impl Filtered {
    /// Number of matching VMs.
    pub fn len(&self) -> usize {
        self.positions
            .as_ref()
            .map_or(self.view.rows.len(), Vec::len)
    }

    /// Whether no VM matches.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn row(&self, i: usize) -> Option<&Row> {
        match &self.positions {
            None => self.view.rows.get(i),
            Some(p) => p
                .get(i)
                .and_then(|&at| self.view.rows.get(usize::try_from(at).ok()?)),
        }
    }

    /// The index of the first row after `after` (ascending), by binary search.
    fn first_after(&self, after: (&Key, &[u8], VmId)) -> usize {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let past = self
                .row(mid)
                .is_some_and(|r| r.position().cmp(&after) == Ordering::Greater);
            if past {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        lo
    }

    /// The VMs of one page, in order, and whether more follow.
    fn page(&self, sort: Sort, after: Option<&Cursor>, limit: usize) -> (Vec<&Row>, bool) {
        let position = after.map(|c| {
            let key = c.value.key();
            let name = natural_key(&c.name);
            self.first_after((&key, &name, c.id))
        });
        let mut rows = Vec::with_capacity(limit.min(self.len()));
        if sort.descending {
            // Rows strictly before the cursor, from the end. `first_after` counts the rows
            // not after the cursor; the cursor's own row (if still there) is one of them.
            let mut end = position.unwrap_or(self.len());
            if let (Some(c), Some(_)) = (after, position)
                && end > 0
                && self.row(end - 1).is_some_and(|r| {
                    r.id == c.id && r.key == c.value.key() && *r.name_key == *natural_key(&c.name)
                })
            {
                end -= 1;
            }
            let mut i = end;
            while i > 0 && rows.len() < limit {
                i -= 1;
                if let Some(r) = self.row(i) {
                    rows.push(r);
                }
            }
            (rows, i > 0)
        } else {
            let mut i = position.unwrap_or(0);
            while i < self.len() && rows.len() < limit {
                if let Some(r) = self.row(i) {
                    rows.push(r);
                }
                i += 1;
            }
            (rows, i < self.len())
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    vms_generation: u64,
    column: Column,
    /// `None`: the unfiltered view.
    filter: Option<String>,
}

/// Sorted and filtered views of recent VM-set generations, least recently used last.
#[derive(Debug, Default)]
pub struct ViewCache {
    entries: Mutex<Vec<(CacheKey, Arc<Filtered>)>>,
    /// Held while a view is built, so concurrent requests wait for one build instead of each
    /// sorting the fleet.
    building: Mutex<()>,
}

impl ViewCache {
    fn get(&self, key: &CacheKey) -> Option<Arc<Filtered>> {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let at = entries.iter().position(|(k, _)| k == key)?;
        let entry = entries.remove(at);
        let found = Arc::clone(&entry.1);
        entries.insert(0, entry);
        Some(found)
    }

    fn put(&self, key: CacheKey, value: Arc<Filtered>) {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        entries.retain(|(k, _)| *k != key && k.vms_generation == key.vms_generation);
        entries.insert(0, (key, value));
        entries.truncate(CACHED_VIEWS);
    }

    /// The VMs of `snapshot` passing `filter`, in `column`'s order: from the cache, or built
    /// (the unfiltered view once per VM-set generation and column, then the filter's rows).
    pub fn filtered(
        &self,
        snapshot: &Snapshot,
        column: Column,
        filter: &VmFilter,
    ) -> Arc<Filtered> {
        let generation = snapshot.vms_generation();
        let base_key = CacheKey {
            vms_generation: generation,
            column,
            filter: None,
        };
        let key = CacheKey {
            vms_generation: generation,
            column,
            filter: (!filter.is_empty()).then(|| filter_text(filter)),
        };
        if let Some(found) = self.get(&key) {
            return found;
        }
        let _building = self
            .building
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Another request may have built it meanwhile.
        if let Some(found) = self.get(&key) {
            return found;
        }
        let base = self.get(&base_key).unwrap_or_else(|| {
            let built = Arc::new(Filtered {
                view: Arc::new(View::build(snapshot, column)),
                positions: None,
            });
            self.put(base_key, Arc::clone(&built));
            built
        });
        if filter.is_empty() {
            return base;
        }
        let positions = base
            .view
            .rows
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                snapshot
                    .vm(r.id)
                    .is_some_and(|vm| filter.matches(snapshot, vm))
            })
            .filter_map(|(i, _)| u32::try_from(i).ok())
            .collect();
        let built = Arc::new(Filtered {
            view: Arc::clone(&base.view),
            positions: Some(positions),
        });
        self.put(key, Arc::clone(&built));
        built
    }
}

/// A canonical text of a filter (cache key; its hash binds cursors).
fn filter_text(filter: &VmFilter) -> String {
    format!(
        "host={}\u{1f}cluster={}\u{1f}state={}\u{1f}q={}",
        filter.host.as_deref().unwrap_or_default().to_lowercase(),
        filter.cluster.as_deref().unwrap_or_default().to_lowercase(),
        filter.state.map(|s| format!("{s:?}")).unwrap_or_default(),
        filter.q.as_deref().unwrap_or_default(),
    )
}

/// FNV-1a, 64 bits: a stable hash (the same in every build and process).
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Where a page ends: the last row's sort value, name and id, and the sort and filters the
/// walk uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Format version.
    #[serde(rename = "v")]
    version: u8,
    /// The sort (`-name`).
    #[serde(rename = "s")]
    sort: String,
    /// Hash of the filters.
    #[serde(rename = "f")]
    filters: u64,
    /// The last row's sort value.
    #[serde(rename = "k")]
    value: Value,
    /// The last row's name.
    #[serde(rename = "n")]
    name: String,
    /// The last row's id.
    #[serde(rename = "i")]
    id: VmId,
}

const CURSOR_VERSION: u8 = 1;

impl Cursor {
    /// The cursor after `row`, whose current record is `vm`. A numeric sort value comes from
    /// the row (uptime advances without a new view; the cursor must name the row's position
    /// in the view); text values do not change within a VM-set generation.
    fn after(
        snapshot: &Snapshot,
        sort: Sort,
        filter: &VmFilter,
        row: &Row,
        vm: &InventoryVm,
    ) -> Self {
        let value = match &row.key {
            Key::Num(n) => Value::Num(*n),
            Key::Text(_) => sort.column.value(snapshot, vm),
        };
        Self {
            version: CURSOR_VERSION,
            sort: sort.text(),
            filters: fnv1a(&filter_text(filter)),
            value,
            name: vm.vm.name.clone(),
            id: row.id,
        }
    }

    /// The opaque text form.
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    /// Reads a cursor for a walk with `sort` and `filter`; anything else is a 400 naming
    /// `cursor`.
    pub fn decode(text: &str, sort: Sort, filter: &VmFilter) -> ApiResult<Self> {
        let bad = || {
            ApiError::bad_query(
                "cursor",
                "not a cursor of this list; pass the next_cursor of the previous page unchanged",
            )
        };
        if text.len() > 4096 {
            return Err(bad());
        }
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text.trim())
            .map_err(|_| bad())?;
        let cursor: Self = serde_json::from_slice(&bytes).map_err(|_| bad())?;
        if cursor.version != CURSOR_VERSION {
            return Err(bad());
        }
        let numeric = matches!(
            sort.column,
            Column::ProcessorCount
                | Column::MemoryStartup
                | Column::MemoryAssigned
                | Column::Uptime
        );
        let same_kind = matches!(
            (&cursor.value, numeric),
            (Value::Num(_), true) | (Value::Text(_), false)
        );
        if cursor.sort != sort.text() || cursor.filters != fnv1a(&filter_text(filter)) || !same_kind
        {
            return Err(ApiError::bad_query(
                "cursor",
                format!(
                    "the cursor belongs to a walk with another sort or other filters; repeat \
                     the sort ({}) and filters of the request that returned it",
                    cursor.sort
                ),
            ));
        }
        Ok(cursor)
    }
}

/// One page of VMs: the VMs (current records) with their hosts, the cursor of the next page,
/// the total.
#[derive(Debug)]
pub struct Page<'s> {
    /// The VMs, in order, each with the host it was read from.
    pub vms: Vec<(&'s HostState, &'s InventoryVm)>,
    /// The cursor of the next page.
    pub next_cursor: Option<String>,
    /// VMs matching the filters.
    pub total: usize,
}

/// The page of `snapshot` after `cursor` (`limit: None` = every remaining row).
pub fn page<'s>(
    cache: &ViewCache,
    snapshot: &'s Snapshot,
    filter: &VmFilter,
    sort: Sort,
    cursor: Option<&Cursor>,
    limit: Option<usize>,
) -> Page<'s> {
    let filtered = cache.filtered(snapshot, sort.column, filter);
    let (rows, more) = filtered.page(sort, cursor, limit.unwrap_or(usize::MAX));
    // Each VM's current record: uptime changes without a new VM-set generation. A view is
    // built from a snapshot of the same VM-set generation, so every row's VM is in it, on the
    // host the row names.
    let current: Vec<(&Row, &HostState, &InventoryVm)> = rows
        .iter()
        .filter_map(|r| {
            let host = snapshot.host(&r.host)?;
            host.vms.get(&r.id).map(|vm| (*r, &**host, &**vm))
        })
        .collect();
    let next_cursor = if more {
        current
            .last()
            .map(|(r, _, vm)| Cursor::after(snapshot, sort, filter, r, vm).encode())
    } else {
        None
    };
    let vms = current
        .into_iter()
        .map(|(_, host, vm)| (host, vm))
        .collect();
    Page {
        vms,
        next_cursor,
        total: filtered.len(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_naturally_and_without_case() {
        let mut names = vec![
            "app-10", "app-2", "App-11", "app-1", "app-100", "b", "a", "app-02x", "app-",
        ];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            names,
            [
                "a", "app-", "app-1", "app-2", "app-02x", "app-10", "App-11", "app-100", "b"
            ]
        );
        assert_eq!(natural_cmp("hv9", "hv10"), Ordering::Less);
        assert_eq!(
            natural_cmp("x-9z", "x-a"),
            Ordering::Less,
            "digits before letters"
        );
        assert_eq!(
            natural_cmp("x 1", "x-1"),
            Ordering::Less,
            "punctuation keeps its place"
        );
        assert_eq!(natural_cmp("v007", "v7"), Ordering::Equal);
    }

    #[test]
    fn sorts_parse_with_a_direction_and_name_the_field_otherwise() {
        assert_eq!(
            Sort::parse("-uptime_seconds").unwrap(),
            Sort {
                column: Column::Uptime,
                descending: true
            }
        );
        assert_eq!(Sort::parse("name").unwrap(), Sort::default());
        let e = Sort::parse("colour").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("sort"));
    }

    #[test]
    fn cursors_round_trip_and_refuse_other_walks() {
        let filter = VmFilter {
            host: Some("hv01".into()),
            ..VmFilter::default()
        };
        let sort = Sort::default();
        let cursor = Cursor {
            version: CURSOR_VERSION,
            sort: sort.text(),
            filters: fnv1a(&filter_text(&filter)),
            value: Value::Text("app-2".into()),
            name: "app-2".into(),
            id: VmId(uuid::Uuid::from_u128(7)),
        };
        let text = cursor.encode();
        assert_eq!(Cursor::decode(&text, sort, &filter).unwrap(), cursor);
        let other_sort = Sort::parse("-name").unwrap();
        assert_eq!(
            Cursor::decode(&text, other_sort, &filter)
                .unwrap_err()
                .field
                .as_deref(),
            Some("cursor")
        );
        assert_eq!(
            Cursor::decode(&text, sort, &VmFilter::default())
                .unwrap_err()
                .field
                .as_deref(),
            Some("cursor")
        );
        assert_eq!(
            Cursor::decode("not-a-cursor!", sort, &filter)
                .unwrap_err()
                .field
                .as_deref(),
            Some("cursor")
        );
    }
}
