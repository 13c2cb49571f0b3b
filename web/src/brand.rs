//! The instance's brand: its name (`portal.name`) and logo (`portal.logo`), shown on every
//! page. The logo is an image file read once at start and served like the portal's own files,
//! under a name carrying a hash of its content (`/static/logo.<hash>.svg`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

/// Largest logo accepted.
pub const MAX_LOGO_BYTES: usize = 512 * 1024;

/// Why the configured logo cannot be used (the server does not start: fix `portal.logo`).
#[derive(Debug, thiserror::Error)]
pub enum LogoError {
    #[error("portal.logo: cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "portal.logo: {} is {size} bytes; a logo may be at most {MAX_LOGO_BYTES} (512 KiB)",
        path.display()
    )]
    TooLarge { path: PathBuf, size: usize },
    #[error(
        "portal.logo: {} is not an SVG, PNG, JPEG or WebP image (by its content)",
        path.display()
    )]
    Format { path: PathBuf },
}

/// The logo: its bytes, type and served file name.
#[derive(Debug, Clone)]
pub struct Logo {
    bytes: Arc<[u8]>,
    content_type: &'static str,
    file: String,
}

impl Logo {
    /// Reads and checks the image at `path`: its type comes from its content, not its name.
    pub fn from_file(path: &Path) -> Result<Self, LogoError> {
        let bytes = std::fs::read(path).map_err(|source| LogoError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        if bytes.len() > MAX_LOGO_BYTES {
            return Err(LogoError::TooLarge {
                path: path.to_path_buf(),
                size: bytes.len(),
            });
        }
        let (content_type, ext) = sniff(&bytes).ok_or_else(|| LogoError::Format {
            path: path.to_path_buf(),
        })?;
        let hash = hex::encode(&Sha256::digest(&bytes)[..4]);
        Ok(Self {
            bytes: bytes.into(),
            content_type,
            file: format!("logo.{hash}.{ext}"),
        })
    }

    /// Where pages load it from.
    pub fn url(&self) -> String {
        format!("/static/{}", self.file)
    }

    pub(crate) fn file(&self) -> &str {
        &self.file
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub(crate) fn content_type(&self) -> &'static str {
        self.content_type
    }
}

/// The image type of `bytes`, by their first bytes (an SVG by its `<svg` element).
fn sniff(bytes: &[u8]) -> Option<(&'static str, &'static str)> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Some(("image/png", "png"));
    }
    if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        return Some(("image/jpeg", "jpg"));
    }
    if bytes.len() > 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        return Some(("image/webp", "webp"));
    }
    let head = String::from_utf8_lossy(&bytes[..bytes.len().min(4096)]).to_ascii_lowercase();
    if head.contains("<svg") {
        return Some(("image/svg+xml", "svg"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_logo_is_known_by_its_content() {
        let dir = tempfile::tempdir().unwrap();
        let svg = dir.path().join("logo.txt");
        std::fs::write(
            &svg,
            "<?xml version=\"1.0\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\"/>",
        )
        .unwrap();
        let logo = Logo::from_file(&svg).unwrap();
        assert_eq!(logo.content_type(), "image/svg+xml");
        assert!(logo.url().starts_with("/static/logo.") && logo.url().ends_with(".svg"));

        let png = dir.path().join("logo.svg");
        std::fs::write(&png, b"\x89PNG\r\n\x1a\nrest").unwrap();
        assert_eq!(
            Logo::from_file(&png).map(|l| l.content_type()).ok(),
            Some("image/png")
        );

        let text = dir.path().join("notes.png");
        std::fs::write(&text, "just words").unwrap();
        assert!(matches!(
            Logo::from_file(&text),
            Err(LogoError::Format { .. })
        ));
        let big = dir.path().join("big.png");
        std::fs::write(&big, vec![0u8; MAX_LOGO_BYTES + 1]).unwrap();
        assert!(matches!(
            Logo::from_file(&big),
            Err(LogoError::TooLarge { .. })
        ));
        assert!(matches!(
            Logo::from_file(&dir.path().join("missing.png")),
            Err(LogoError::Read { .. })
        ));
    }
}
