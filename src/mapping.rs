//! The mapping rules of a plan, compiled for lookups on every row.
//!
//! Built once from `config::model::MappingConfig` (and the SKU map file it may
//! name) by `config::check`; used by `diff::engine` for SPEC section 2, steps 1 to
//! 5. Names in `safety_stock` and `bundles` are target SKUs.

use foldhash::HashMap;

use crate::config::model::{OrphanPolicy, UnmappedPolicy};

/// One SKU rename: `old` becomes `new`, each source unit `factor` target units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rename {
    pub old: Box<str>,
    pub new: Box<str>,
    pub factor: i64,
}

/// A bundle and its components (target SKUs with units per bundle).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    pub sku: Box<str>,
    pub components: Vec<(Box<str>, i64)>,
}

/// What to do with a source location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocationRule {
    /// Use this target location.
    To(Box<str>),
    /// Drop the row.
    Skip,
    /// The row is an error.
    Error,
}

/// The compiled rules.
#[derive(Debug, Default, Clone)]
pub struct Mapping {
    renames: Vec<Rename>,
    rename_index: HashMap<Box<str>, u32>,
    pub unmapped_skus: UnmappedPolicy,
    locations: Option<HashMap<Box<str>, Box<str>>>,
    pub unmapped_locations: UnmappedPolicy,
    safety_default: i64,
    safety: HashMap<Box<str>, i64>,
    bundles: Vec<Bundle>,
    bundle_index: HashMap<Box<str>, u32>,
    /// Component SKU to (bundle index, position of the component in the bundle).
    component_of: HashMap<Box<str>, Vec<(u32, u32)>>,
    pub orphans: OrphanPolicy,
}

/// Builds a [`Mapping`]. Callers have already checked the inputs (no old SKU
/// twice, positive factors, components are not bundles).
#[derive(Debug, Default)]
pub struct MappingBuilder {
    m: Mapping,
}

impl MappingBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a rename. Returns false (and ignores it) when `old` is already mapped.
    pub fn rename(&mut self, old: &str, new: &str, factor: i64) -> bool {
        if self.m.rename_index.contains_key(old) {
            return false;
        }
        self.m.rename_index.insert(old.into(), self.m.renames.len() as u32);
        self.m.renames.push(Rename { old: old.into(), new: new.into(), factor });
        true
    }

    pub fn unmapped_skus(&mut self, p: UnmappedPolicy) -> &mut Self {
        self.m.unmapped_skus = p;
        self
    }

    /// Sets the location map; `None` means locations pass through unless a policy says otherwise.
    pub fn locations(&mut self, map: Option<impl IntoIterator<Item = (String, String)>>) -> &mut Self {
        self.m.locations = map.map(|m| m.into_iter().map(|(k, v)| (k.into_boxed_str(), v.into_boxed_str())).collect());
        self
    }

    pub fn unmapped_locations(&mut self, p: UnmappedPolicy) -> &mut Self {
        self.m.unmapped_locations = p;
        self
    }

    pub fn safety_stock(&mut self, default: i64, per_sku: impl IntoIterator<Item = (String, i64)>) -> &mut Self {
        self.m.safety_default = default;
        self.m.safety = per_sku.into_iter().map(|(k, v)| (k.into_boxed_str(), v)).collect();
        self
    }

    pub fn bundle(&mut self, sku: &str, components: impl IntoIterator<Item = (String, i64)>) -> &mut Self {
        let b = self.m.bundles.len() as u32;
        let components: Vec<(Box<str>, i64)> = components.into_iter().map(|(c, u)| (c.into_boxed_str(), u)).collect();
        for (pos, (c, _)) in components.iter().enumerate() {
            self.m.component_of.entry(c.clone()).or_default().push((b, pos as u32));
        }
        self.m.bundle_index.insert(sku.into(), b);
        self.m.bundles.push(Bundle { sku: sku.into(), components });
        self
    }

    pub fn orphans(&mut self, p: OrphanPolicy) -> &mut Self {
        self.m.orphans = p;
        self
    }

    pub fn build(self) -> Mapping {
        self.m
    }
}

/// Result of step 1 for one source SKU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkuRule<'a> {
    /// Renamed by entry `index` of the rename list.
    Renamed { index: u32, new: &'a str, factor: i64 },
    /// No entry; kept as it is.
    Passthrough,
    /// No entry; the row is dropped.
    Skip,
    /// No entry; the row is an error.
    Error,
}

impl Mapping {
    /// Step 1: what happens to a source SKU.
    #[inline]
    pub fn sku(&self, sku: &str) -> SkuRule<'_> {
        if !self.renames.is_empty()
            && let Some(&i) = self.rename_index.get(sku)
        {
            let r = &self.renames[i as usize];
            return SkuRule::Renamed { index: i, new: &r.new, factor: r.factor };
        }
        match self.unmapped_skus {
            UnmappedPolicy::Passthrough => SkuRule::Passthrough,
            UnmappedPolicy::Skip => SkuRule::Skip,
            UnmappedPolicy::Error => SkuRule::Error,
        }
    }

    /// Step 2: what happens to a source location.
    pub fn location(&self, loc: &str) -> LocationRule {
        if let Some(map) = &self.locations
            && let Some(to) = map.get(loc)
        {
            return LocationRule::To(to.clone());
        }
        let policy = self.unmapped_location_policy();
        match policy {
            UnmappedPolicy::Passthrough => LocationRule::To(loc.into()),
            UnmappedPolicy::Skip => LocationRule::Skip,
            UnmappedPolicy::Error => LocationRule::Error,
        }
    }

    /// Steps 1 and 2 for one source key: the target key it lands on, or `None`
    /// when it is skipped or unmapped (the factor is not applied).
    pub fn target_key(&self, sku: &str, loc: &str) -> Option<(String, String)> {
        let sku = match self.sku(sku) {
            SkuRule::Renamed { new, .. } => new.to_string(),
            SkuRule::Passthrough => sku.to_string(),
            SkuRule::Skip | SkuRule::Error => return None,
        };
        match self.location(loc) {
            LocationRule::To(l) => Some((sku, l.to_string())),
            LocationRule::Skip | LocationRule::Error => None,
        }
    }

    /// The policy for unmapped locations; `error` is the default once a map is given.
    pub fn unmapped_location_policy(&self) -> UnmappedPolicy {
        self.unmapped_locations
    }

    /// The rename with this index.
    pub fn rename_at(&self, index: u32) -> &Rename {
        &self.renames[index as usize]
    }

    pub fn renames(&self) -> &[Rename] {
        &self.renames
    }

    /// Step 4: units held back for a target SKU.
    #[inline]
    pub fn safety_stock(&self, sku: &str) -> i64 {
        if self.safety.is_empty() {
            return self.safety_default;
        }
        self.safety.get(sku).copied().unwrap_or(self.safety_default)
    }

    pub fn has_safety_stock(&self) -> bool {
        self.safety_default != 0 || !self.safety.is_empty()
    }

    pub fn bundles(&self) -> &[Bundle] {
        &self.bundles
    }

    /// The bundle index of a target SKU, when it is a bundle.
    #[inline]
    pub fn bundle_of(&self, sku: &str) -> Option<u32> {
        if self.bundle_index.is_empty() {
            return None;
        }
        self.bundle_index.get(sku).copied()
    }

    /// The bundles a target SKU is a component of: (bundle index, component position).
    #[inline]
    pub fn component_of(&self, sku: &str) -> &[(u32, u32)] {
        if self.component_of.is_empty() {
            return &[];
        }
        self.component_of.get(sku).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn has_bundles(&self) -> bool {
        !self.bundles.is_empty()
    }
}
