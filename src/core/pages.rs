//! Listings that Google returns in pages, read whole.

/// Every item of a paged listing: `fetch` gets the page after a token, with
/// the token of the next one (empty or none: the last page).
pub async fn all_pages<T, F, Fut>(mut fetch: F) -> ciofs_frontends::VfsResult<Vec<T>>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: std::future::Future<Output = ciofs_backends::BackendResult<(Vec<T>, Option<String>)>>,
{
    let mut items = Vec::new();
    let mut token = None;
    loop {
        let (page, next) = fetch(token).await.map_err(super::errors::vfs_error)?;
        items.extend(page);
        token = next.filter(|t| !t.is_empty());
        if token.is_none() {
            return Ok(items);
        }
    }
}
