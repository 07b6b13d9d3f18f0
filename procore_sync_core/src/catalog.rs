//! The shape of the resource catalog: which Procore endpoints a sync walks, and in what
//! scope. The rows themselves live in `procore_sync_resource` (adding one is an INSERT).

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scope {
    User,
    Company,
    #[default]
    Project,
}

/// How a dated resource (daily logs) is asked for its days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateFilter {
    /// `log_date=YYYY-MM-DD`: one day per request (one listing walks its days in order).
    LogDate,
    /// `start_date=...&end_date=...`: the whole window in one listing.
    DateRange,
}

#[derive(Debug, Clone, Default)]
pub struct Resource {
    pub name: String,
    pub path_template: String,
    pub scope: Scope,
    pub supports_updated_at_filter: bool,
    pub paginated: bool,
    pub per_page: u32,
    /// A child resource: listed once per record of this parent (same scope), whose id fills
    /// `{parent_placeholder}` in the path.
    pub parent_resource: Option<String>,
    pub parent_placeholder: Option<String>,
    /// A dated resource: read by days instead of by `filters[updated_at]`.
    pub date_filter: Option<DateFilter>,
    /// A dated resource's first full pass reads its whole history (`date_range` only).
    pub history_on_first_sync: bool,
    /// The listing of the resource's deleted records, read at every incremental pass.
    pub recycle_bin_path: Option<String>,
    /// The list takes `filters[include_deleted]=only`, read at every incremental pass.
    pub include_deleted: bool,
    /// The response is one object whose records are the array under this key (Procore's
    /// folders answer a folder with its `folders` and `files`).
    pub records_key: Option<String>,
}

impl Resource {
    /// Where the resource's deleted records are listed, if anywhere: the recycle bin wins
    /// over `filters[include_deleted]`.
    pub fn deletions_listed(&self) -> bool {
        self.recycle_bin_path.is_some() || self.include_deleted
    }
}
