//! The shape of the resource catalog: which Procore endpoints a sync walks, and in what
//! scope. The rows themselves live in `procore_sync_resource` (adding one is an INSERT).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    User,
    Company,
    Project,
}

#[derive(Debug, Clone)]
pub struct Resource {
    pub name: String,
    pub path_template: String,
    pub scope: Scope,
    pub supports_updated_at_filter: bool,
    pub paginated: bool,
    pub per_page: u32,
}
