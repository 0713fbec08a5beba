//! Access tokens of the control plane (`weir token create`), by hash, on the pooled
//! connections (whose commits wait for the disk: a token printed is a token kept).

use weir_store::{Result, TokenRecord};

use crate::Inner;

const TOKEN_COLUMNS: &str = "hash, project, domain, role, created_at";

fn token_from_row(row: &tokio_postgres::Row) -> TokenRecord {
    TokenRecord {
        hash: row.get(0),
        project: row.get(1),
        domain: row.get(2),
        role: row.get(3),
        created_at: row.get(4),
    }
}

impl Inner {
    pub(crate) async fn create_token(&self, t: &TokenRecord) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                &format!("INSERT INTO tokens({TOKEN_COLUMNS}) VALUES($1, $2, $3, $4, $5)"),
                &[&t.hash, &t.project, &t.domain, &t.role, &t.created_at],
            )
            .await
            .map(|_| ())
            .map_err(self.err("recording a token"))
    }

    pub(crate) async fn token(&self, hash: &str) -> Result<Option<TokenRecord>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = $1"),
                &[&hash],
            )
            .await
            .map_err(self.err("reading a token"))?;
        Ok(row.as_ref().map(token_from_row))
    }

    pub(crate) async fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!("SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY created_at, hash"),
                &[],
            )
            .await
            .map_err(self.err("listing tokens"))?;
        Ok(rows.iter().map(token_from_row).collect())
    }

    pub(crate) async fn revoke_tokens(&self, prefix: &str) -> Result<u64> {
        let client = self.client().await?;
        client
            .execute("DELETE FROM tokens WHERE starts_with(hash, $1)", &[&prefix])
            .await
            .map_err(self.err("revoking tokens"))
    }
}
