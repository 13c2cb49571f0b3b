//! Placeholders in text: `${NAME}` in the config file, `{{last_week}}` in a Keboola filter.

/// `text` with each `open NAME close` replaced by `lookup(NAME)`; text after an `open` that is
/// never closed stays as it is. The first error of `lookup` is the answer.
///
/// ```
/// use dataport_common::text::substitute;
///
/// let env = |name: &str| match name {
///     "HOME" => Ok("/srv".to_string()),
///     other => Err(format!("{other} is not set")),
/// };
/// assert_eq!(substitute("dir: ${HOME}/data", "${", "}", env), Ok("dir: /srv/data".into()));
/// assert_eq!(substitute("${NOPE}", "${", "}", env), Err("NOPE is not set".into()));
/// assert_eq!(substitute("${HOME", "${", "}", env), Ok("${HOME".into()));
/// ```
pub fn substitute<E>(
    text: &str,
    open: &str,
    close: &str,
    mut lookup: impl FnMut(&str) -> Result<String, E>,
) -> Result<String, E> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(open) {
        out.push_str(&rest[..start]);
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(close) else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        out.push_str(&lookup(&after[..end])?);
        rest = &after[end + close.len()..];
    }
    out.push_str(rest);
    Ok(out)
}
