//! Plugin variables: the settings and secrets operators give plugins
//! (`meshplay vars set`, `/api/v1/plugins/{name}/vars`), kept in the
//! store and handed to the workers that run the plugins.
//!
//! A plugin declares its variables in its manifest (`[variables]`); a value
//! is set for the plugin or, overriding it, for one tenant. A secret's value
//! is sealed with ChaCha20-Poly1305 under a key kept in the data directory
//! (`secrets.key`, 32 bytes, mode 0600, made on first start), with the
//! variable's plugin, tenant and name as associated data, so that a sealed
//! value moved to another row of the store does not open. What leaves the
//! master: a listing says of a secret only whether it is set; the audit log
//! holds the route, never the body; workers get the opened value over the
//! hub (`GET /db/vars`), for the plugin's own `vars.get`.
//!
//! Failure modes ([`VarsError`]): an unknown plugin or variable, a value
//! over [`MAX_VARIABLE_BYTES`], a key file that cannot be read or made, a
//! sealed value that does not open (another master's key), the store's
//! own failure.

use crate::catalogue::manifest::{MAX_VARIABLE_BYTES, Manifest};
use crate::datadir::DataDir;
use crate::master::shard;
use crate::master::store::{Store, StoreError, StoredVar};
use crate::mesophyll::db::VarValue;
use crate::mesophyll::message::Tenant;
use crate::rest::{VarInfo, VarOverride};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use std::sync::Arc;

/// The key file's name in the data directory.
pub const KEY_FILE: &str = "secrets.key";

const NONCE_BYTES: usize = 12;

/// Why a variable could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum VarsError {
    /// No plugin of that name, or it declares no such variable.
    #[error("{0}")]
    Unknown(String),
    /// The value is not one the variable may hold.
    #[error("{0}")]
    Invalid(String),
    /// The key file could not be read or made.
    #[error("secrets key {path}: {message}")]
    Key {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// A sealed value did not open.
    #[error("the secret {0} does not open with this master's secrets.key")]
    Sealed(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The variables of every plugin.
pub struct Vars {
    store: Arc<dyn Store>,
    cipher: ChaCha20Poly1305,
}

impl Vars {
    /// Opens the key in `data_dir` (making it on first start).
    pub fn open(dir: &DataDir, store: Arc<dyn Store>) -> Result<Vars, VarsError> {
        let path = dir.path().join(KEY_FILE);
        let err = |message: String| VarsError::Key {
            path: path.display().to_string(),
            message,
        };
        let key = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = vec![0u8; 32];
                rand::fill(&mut key[..]);
                dir.write_atomic(KEY_FILE, &key, 0o600)
                    .map_err(|e| err(e.to_string()))?;
                key
            }
            Err(e) => return Err(err(e.to_string())),
        };
        if key.len() != 32 {
            return Err(err(format!("{} bytes, not 32", key.len())));
        }
        Ok(Vars {
            store,
            cipher: ChaCha20Poly1305::new(&Key::try_from(&key[..]).expect("32 bytes")),
        })
    }

    fn seal(&self, var: &StoredVar, plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_BYTES];
        rand::fill(&mut nonce[..]);
        let aad = StoredVar::key(&var.plugin, var.tenant.as_ref(), &var.name);
        let sealed = self
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plain,
                    aad: aad.as_bytes(),
                },
            )
            .expect("sealing a value in memory cannot fail");
        [&nonce[..], &sealed].concat()
    }

    fn open_value(&self, var: &StoredVar) -> Result<String, VarsError> {
        let key = StoredVar::key(&var.plugin, var.tenant.as_ref(), &var.name);
        let sealed = || VarsError::Sealed(format!("{}.{}", var.plugin, var.name));
        let bytes = if var.secret {
            if var.value.len() < NONCE_BYTES {
                return Err(sealed());
            }
            let (nonce, data) = var.value.split_at(NONCE_BYTES);
            self.cipher
                .decrypt(
                    &Nonce::try_from(nonce).map_err(|_| sealed())?,
                    Payload {
                        msg: data,
                        aad: key.as_bytes(),
                    },
                )
                .map_err(|_| sealed())?
        } else {
            var.value.clone()
        };
        String::from_utf8(bytes).map_err(|_| sealed())
    }

    /// Sets `name` of `plugin` (for `tenant` alone when given) to `value`.
    pub async fn set(
        &self,
        manifest: &Manifest,
        name: &str,
        tenant: Option<Tenant>,
        value: &str,
    ) -> Result<(), VarsError> {
        let declared = declared(manifest, name)?;
        if value.len() > MAX_VARIABLE_BYTES {
            return Err(VarsError::Invalid(format!(
                "a value of {} bytes (at most {MAX_VARIABLE_BYTES})",
                value.len()
            )));
        }
        let mut var = StoredVar {
            plugin: manifest.name.clone(),
            tenant,
            name: name.to_owned(),
            secret: declared.secret,
            value: Vec::new(),
        };
        var.value = if var.secret {
            self.seal(&var, value.as_bytes())
        } else {
            value.as_bytes().to_vec()
        };
        Ok(self.store.put_var(&var).await?)
    }

    /// Unsets `name` of `plugin` (for `tenant`); whether it was set.
    pub async fn unset(
        &self,
        manifest: &Manifest,
        name: &str,
        tenant: Option<&Tenant>,
    ) -> Result<bool, VarsError> {
        declared(manifest, name)?;
        let key = StoredVar::key(&manifest.name, tenant, name);
        Ok(self.store.delete_var(&key).await?)
    }

    /// What an operator sees of `manifest`'s variables: secrets only as set
    /// or unset. Reads the store: call it off the async threads.
    pub fn list(&self, manifest: &Manifest) -> Result<Vec<VarInfo>, VarsError> {
        let stored: Vec<StoredVar> = self
            .store
            .vars()?
            .into_iter()
            .filter(|v| v.plugin == manifest.name)
            .collect();
        let mut out = Vec::new();
        for (name, decl) in &manifest.variables {
            let shown = |v: &StoredVar| -> Result<Option<String>, VarsError> {
                Ok(if decl.secret {
                    None
                } else {
                    Some(self.open_value(v)?)
                })
            };
            let own = stored
                .iter()
                .find(|v| v.name == *name && v.tenant.is_none());
            let mut overrides = Vec::new();
            for v in stored.iter().filter(|v| v.name == *name) {
                if let Some(tenant) = &v.tenant {
                    overrides.push(VarOverride {
                        tenant: tenant.clone(),
                        value: shown(v)?,
                    });
                }
            }
            out.push(VarInfo {
                name: name.clone(),
                description: decl.description.clone(),
                secret: decl.secret,
                required: decl.required,
                set: own.is_some(),
                value: match own {
                    Some(v) => shown(v)?,
                    None if decl.secret => None,
                    None => decl.default.clone(),
                },
                overrides,
            });
        }
        Ok(out)
    }

    /// What worker `worker` of `workers` may hand its tenants' plugins:
    /// every plugin's own values, and the overrides of its shard's tenants,
    /// secrets opened. Reads the store: call it off the async threads.
    pub fn for_worker(&self, worker: u32, workers: u32) -> Result<Vec<VarValue>, VarsError> {
        let mut out = Vec::new();
        for var in self.store.vars()? {
            if var
                .tenant
                .as_ref()
                .is_some_and(|t| shard::worker_for(t, workers) != worker)
            {
                continue;
            }
            let value = self.open_value(&var)?;
            out.push(VarValue {
                plugin: var.plugin,
                tenant: var.tenant,
                name: var.name,
                value,
            });
        }
        Ok(out)
    }
}

fn declared<'m>(
    manifest: &'m Manifest,
    name: &str,
) -> Result<&'m crate::catalogue::manifest::Variable, VarsError> {
    manifest.variables.get(name).ok_or_else(|| {
        VarsError::Unknown(format!(
            "plugin {} declares no variable {name:?} (its [variables]: {})",
            manifest.name,
            manifest
                .variables
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })
}
