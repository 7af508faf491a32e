//! Where the store lives: the connection URL, the schema, the pool size.

use leasehold_core::StoreError;

/// The schema leasehold's tables live in unless the URL or the options name another.
pub const DEFAULT_SCHEMA: &str = "leasehold";

/// The longest schema name: PostgreSQL's identifiers stop at 63 bytes, and the notification
/// channel is `leasehold_` followed by the schema name.
pub const MAX_SCHEMA_LEN: usize = 48;

/// How to open a [`PgStore`](crate::PgStore).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgOptions {
    /// The libpq-style URL (`postgres://user@host:port/db`), without leasehold's own `schema`
    /// parameter.
    pub url: String,
    /// The schema holding leasehold's tables (created and migrated when `create` is set).
    pub schema: String,
    /// At most this many pooled connections (at least 1).
    pub pool_size: usize,
    /// Create the schema and apply migrations; when unset, a missing schema is refused with
    /// `NotADatabase` (read-only commands must not create a database by a typo).
    pub create: bool,
    /// How many ended attempts the history keeps per item (at least 1; default
    /// [`DEFAULT_HISTORY_KEEP`](leasehold_core::DEFAULT_HISTORY_KEEP), 25). Older ones are
    /// trimmed when a newer one is recorded.
    pub history_keep: u32,
}

impl PgOptions {
    /// Options from a `--db` URL: `postgres://…` or `postgresql://…`, with an optional
    /// `schema=NAME` query parameter (leasehold's own; the rest goes to the driver as is).
    ///
    /// ```
    /// let o = leasehold_postgres::PgOptions::from_url("postgres://u@h/db?schema=jobs&sslmode=disable").unwrap();
    /// assert_eq!(o.schema, "jobs");
    /// assert_eq!(o.url, "postgres://u@h/db?sslmode=disable");
    /// ```
    pub fn from_url(url: &str) -> Result<PgOptions, StoreError> {
        let url = url.trim();
        if !is_postgres_url(url) {
            return Err(StoreError::InvalidInput(format!(
                "{url:?} is not a PostgreSQL URL (postgres://…)"
            )));
        }
        let (base, query) = match url.split_once('?') {
            Some((b, q)) => (b, q),
            None => (url, ""),
        };
        let mut schema = None;
        let mut rest = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("schema", v)) => schema = Some(v.to_string()),
                _ => rest.push(pair),
            }
        }
        let url = if rest.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        let opts = PgOptions {
            url,
            schema: schema.unwrap_or_else(|| DEFAULT_SCHEMA.to_string()),
            pool_size: 16,
            create: true,
            history_keep: leasehold_core::DEFAULT_HISTORY_KEEP,
        };
        opts.validate()?;
        Ok(opts)
    }

    /// The same options keeping `keep` ended attempts per item (0 is refused by
    /// [`validate`](Self::validate)).
    pub fn history_keep(mut self, keep: u32) -> Self {
        self.history_keep = keep;
        self
    }

    /// The same options with another schema.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// The same options, refusing to create a missing schema.
    pub fn existing_only(mut self) -> Self {
        self.create = false;
        self
    }

    /// Refuses a schema name that is not a plain lower-case identifier (so it needs no
    /// quoting anywhere) or is reserved, a zero pool and a zero `history_keep`.
    pub fn validate(&self) -> Result<(), StoreError> {
        validate_schema(&self.schema)?;
        if self.history_keep == 0 {
            return Err(StoreError::InvalidInput(
                "history_keep must be at least 1 (ended attempts kept per item)".into(),
            ));
        }
        if self.pool_size == 0 {
            return Err(StoreError::InvalidInput(
                "pool size must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// The notification channel of this schema.
    pub(crate) fn channel(&self) -> String {
        format!("leasehold_{}", self.schema)
    }
}

/// Whether `url` names a PostgreSQL database.
pub fn is_postgres_url(url: &str) -> bool {
    let url = url.trim_start();
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

fn validate_schema(s: &str) -> Result<(), StoreError> {
    let bad = |why: &str| {
        Err(StoreError::InvalidInput(format!(
            "schema {s:?} {why}; use lower-case letters, digits and _ (at most {MAX_SCHEMA_LEN}), starting with a letter or _"
        )))
    };
    if s.is_empty() {
        return bad("is empty");
    }
    if s.len() > MAX_SCHEMA_LEN {
        return bad("is too long");
    }
    let first = s.as_bytes()[0];
    if !(first.is_ascii_lowercase() || first == b'_') {
        return bad("does not start with a letter or _");
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return bad("has characters other than a-z, 0-9 and _");
    }
    if s.starts_with("pg_") || s == "information_schema" {
        return bad("is reserved by PostgreSQL");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_driver_parameters_and_lose_the_schema() {
        let o = PgOptions::from_url("postgresql://a@b:5/c").unwrap();
        assert_eq!(
            (o.url.as_str(), o.schema.as_str()),
            ("postgresql://a@b:5/c", "leasehold")
        );
        let o = PgOptions::from_url("postgres://a@b/c?connect_timeout=3&schema=t_1").unwrap();
        assert_eq!(o.url, "postgres://a@b/c?connect_timeout=3");
        assert_eq!(o.schema, "t_1");
    }

    #[test]
    fn bad_schemas_and_schemes_are_refused() {
        for url in [
            "postgres://h/d?schema=",
            "postgres://h/d?schema=Upper",
            "postgres://h/d?schema=a-b",
            "postgres://h/d?schema=1a",
            "postgres://h/d?schema=pg_x",
            "postgres://h/d?schema=a;drop",
            "sqlite://x.db",
            "x.db",
        ] {
            assert!(
                matches!(PgOptions::from_url(url), Err(StoreError::InvalidInput(_))),
                "{url}"
            );
        }
        let long = format!("postgres://h/d?schema={}", "a".repeat(MAX_SCHEMA_LEN + 1));
        assert!(PgOptions::from_url(&long).is_err());
    }
}
