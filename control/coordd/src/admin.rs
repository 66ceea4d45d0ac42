//! The admin channel: a Unix socket in the state directory (mode 0600, so only the
//! server's own user — root in the usual deployment — may use it), one JSON request line and
//! one JSON response line per connection.
//!
//! The same commands are served over HTTP at [`HTTP_PATH`] (`POST`, the request as the body,
//! `Authorization: Bearer wkey-api-…`), except the API-key commands themselves: who holds the
//! socket (root) makes API keys, and an API key cannot make more.
//!
//! Why a socket rather than the CLI opening the database: the running server owns the state
//! and must push every change to the open map streams at once (a deleted node leaves its
//! peers' maps within seconds); a second writer behind its back could do neither. Headscale
//! takes the same approach with gRPC over a socket; one JSON line is all weft needs.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use weft_tailcfg::IpPrefix;

use crate::server::Server;

/// Largest request line accepted.
const MAX_LINE: u64 = 64 * 1024;

/// One admin command.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Request {
    /// Create a user.
    UsersCreate {
        /// Login name.
        name: String,
    },
    /// List users.
    UsersList,
    /// Delete a user without nodes or keys.
    UsersDelete {
        /// Login name.
        name: String,
    },
    /// Create a pre-auth key.
    KeysCreate {
        /// Owner.
        user: String,
        /// Usable many times.
        reusable: bool,
        /// Nodes are ephemeral.
        ephemeral: bool,
        /// Tags for its nodes.
        tags: Vec<String>,
        /// Validity in seconds.
        valid_secs: i64,
    },
    /// List pre-auth keys.
    KeysList,
    /// Revoke a key by prefix.
    KeysRevoke {
        /// Public prefix.
        prefix: String,
    },
    /// List nodes.
    NodesList,
    /// Delete a node.
    NodesDelete {
        /// Node id.
        id: i64,
    },
    /// Expire a node's key.
    NodesExpire {
        /// Node id.
        id: i64,
    },
    /// Set a node's approved routes.
    NodesApproveRoutes {
        /// Node id.
        id: i64,
        /// Routes (CIDR).
        routes: Vec<String>,
    },
    /// Rename a node's MagicDNS label.
    NodesRename {
        /// Node id.
        id: i64,
        /// New label.
        name: String,
    },
    /// List pending interactive logins.
    PendingList,
    /// Approve a pending login as a user's node.
    NodesRegister {
        /// Owner.
        user: String,
        /// The id at the end of the AuthURL.
        auth_id: String,
    },
    /// Read the policy file again.
    PolicyReload,
    /// Check a policy against the live tailnet without applying it.
    PolicyCheck {
        /// The policy text.
        text: String,
    },
    /// Check a policy, make it live, and write it to the policy file.
    PolicySet {
        /// The policy text.
        text: String,
    },
    /// Replace a node's tags.
    NodesTag {
        /// Node id.
        id: i64,
        /// Tags (`tag:name`); empty to untag.
        tags: Vec<String>,
    },
    /// Create an API key for the HTTP admin API (socket only).
    ApikeysCreate {
        /// Validity in seconds.
        valid_secs: i64,
    },
    /// List API keys (socket only).
    ApikeysList,
    /// Revoke an API key by prefix (socket only).
    ApikeysRevoke {
        /// Public prefix.
        prefix: String,
    },
    /// Set a node's key expiry: never (`None`) or in `secs` seconds.
    NodesExpiry {
        /// Node id.
        id: i64,
        /// Seconds from now; `None` disables expiry.
        secs: Option<i64>,
    },
}

/// The answer: `ok` with a JSON result, or an error text.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    /// Whether the command succeeded.
    pub ok: bool,
    /// What went wrong.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
    /// The command's result.
    #[serde(default)]
    pub result: serde_json::Value,
}

fn to_json<T: Serialize>(v: T) -> Result<(serde_json::Value, Vec<weft_tailnet::StoreOp>), String> {
    serde_json::to_value(v)
        .map(|v| (v, Vec::new()))
        .map_err(|e| e.to_string())
}

/// Runs one command against the server.
pub fn execute(server: &Server, req: Request) -> Response {
    let e = |x: weft_tailnet::CoordError| x.to_string();
    let r: Result<serde_json::Value, String> = match req {
        Request::UsersCreate { name } => server.with(|c, now| {
            let ops = c.create_user(now, &name).map_err(e)?;
            Ok((serde_json::json!({ "name": name }), ops))
        }),
        Request::UsersList => server.with(|c, _| {
            to_json(
                c.users()
                    .iter()
                    .map(
                        |u| serde_json::json!({"id": u.id.0, "name": u.name, "created": u.created}),
                    )
                    .collect::<Vec<_>>(),
            )
        }),
        Request::UsersDelete { name } => {
            server.with(|c, _| Ok((serde_json::Value::Null, c.delete_user(&name).map_err(e)?)))
        }
        Request::KeysCreate {
            user,
            reusable,
            ephemeral,
            tags,
            valid_secs,
        } => server.with(|c, now| {
            let mut entropy = [0u8; weft_tailnet::authkey::KEY_ENTROPY];
            getrandom::getrandom(&mut entropy).map_err(|err| err.to_string())?;
            let (key, ops) = c
                .create_key(now, &user, reusable, ephemeral, tags, valid_secs, &entropy)
                .map_err(e)?;
            Ok((
                serde_json::json!({ "key": key.text, "prefix": key.prefix }),
                ops,
            ))
        }),
        Request::KeysList => server.with(|c, _| to_json(c.keys())),
        Request::KeysRevoke { prefix } => {
            server.with(|c, _| Ok((serde_json::Value::Null, c.revoke_key(&prefix).map_err(e)?)))
        }
        Request::NodesList => server.with(|c, now| to_json(c.nodes(now))),
        Request::NodesDelete { id } => {
            server.with(|c, now| Ok((serde_json::Value::Null, c.delete_node(now, id).map_err(e)?)))
        }
        Request::NodesExpire { id } => {
            server.with(|c, now| Ok((serde_json::Value::Null, c.expire_node(now, id).map_err(e)?)))
        }
        Request::NodesApproveRoutes { id, routes } => server.with(|c, now| {
            let routes = routes
                .iter()
                .map(|r| r.parse::<IpPrefix>().map_err(|err| format!("{r}: {err}")))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((
                serde_json::Value::Null,
                c.approve_routes(now, id, routes).map_err(e)?,
            ))
        }),
        Request::NodesRename { id, name } => server.with(|c, now| {
            Ok((
                serde_json::Value::Null,
                c.rename_node(now, id, &name).map_err(e)?,
            ))
        }),
        Request::PendingList => server.with(|c, _| {
            to_json(
                c.pending()
                    .into_iter()
                    .map(|(id, host)| serde_json::json!({"auth_id": id, "hostname": host}))
                    .collect::<Vec<_>>(),
            )
        }),
        Request::NodesRegister { user, auth_id } => server.with(|c, now| {
            let (id, ops) = c.approve_pending(now, &auth_id, &user).map_err(e)?;
            Ok((serde_json::json!({ "id": id.0 }), ops))
        }),
        Request::PolicyReload => server.reload_policy().map(|()| serde_json::Value::Null),
        Request::PolicyCheck { text } => server.with(|c, _| {
            c.check_policy(&text).map_err(e)?;
            Ok((serde_json::Value::Null, Vec::new()))
        }),
        Request::PolicySet { text } => server.set_policy(&text).map(|()| serde_json::Value::Null),
        Request::NodesTag { id, tags } => server.with(|c, now| {
            Ok((
                serde_json::Value::Null,
                c.set_tags(now, id, tags).map_err(e)?,
            ))
        }),
        Request::ApikeysCreate { valid_secs } => server.with(|c, now| {
            let mut entropy = [0u8; weft_tailnet::authkey::KEY_ENTROPY];
            getrandom::getrandom(&mut entropy).map_err(|err| err.to_string())?;
            let (key, ops) = c.create_api_key(now, valid_secs, &entropy).map_err(e)?;
            Ok((serde_json::json!({ "key": key.text, "prefix": key.prefix }), ops))
        }),
        Request::ApikeysList => server.with(|c, _| {
            to_json(
                c.api_keys()
                    .into_iter()
                    .map(|(prefix, expiration, revoked)| {
                        serde_json::json!({"prefix": prefix, "expiration": expiration, "revoked": revoked})
                    })
                    .collect::<Vec<_>>(),
            )
        }),
        Request::ApikeysRevoke { prefix } => server.with(|c, _| {
            Ok((serde_json::Value::Null, c.revoke_api_key(&prefix).map_err(e)?))
        }),
        Request::NodesExpiry { id, secs } => server.with(|c, now| {
            Ok((
                serde_json::Value::Null,
                c.set_key_expiry(now, id, secs).map_err(e)?,
            ))
        }),
    };
    match r {
        Ok(result) => Response {
            ok: true,
            error: String::new(),
            result,
        },
        Err(error) => Response {
            ok: false,
            error,
            result: serde_json::Value::Null,
        },
    }
}

/// Where the HTTP admin API listens (on the server's own address).
pub const HTTP_PATH: &str = "/api/v1/command";

/// One HTTP admin API call: checks the bearer API key, refuses the API-key commands, runs the
/// command, answers its [`Response`] as JSON (401 without a valid key, 403 for a command
/// only the socket may run, 400 for a malformed request).
pub async fn http(
    server: Arc<Server>,
    bearer: Option<String>,
    body: bytes::Bytes,
) -> hyper::Response<weft_coord::Body> {
    use hyper::StatusCode;
    let fail = |status: StatusCode, error: &str| {
        crate::server::json_response(
            status,
            &Response {
                ok: false,
                error: error.to_owned(),
                result: serde_json::Value::Null,
            },
        )
    };
    let authorized = match bearer {
        Some(k) => {
            let server = Arc::clone(&server);
            tokio::task::spawn_blocking(move || server.api_key_valid(&k))
                .await
                .unwrap_or(false)
        }
        None => false,
    };
    if !authorized {
        return fail(
            StatusCode::UNAUTHORIZED,
            "a valid API key is required (Authorization: Bearer wkey-api-…)",
        );
    }
    let req: Request = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(err) => {
            return fail(
                StatusCode::BAD_REQUEST,
                &format!(
                    "malformed request: {:?} at line {} column {}",
                    err.classify(),
                    err.line(),
                    err.column()
                ),
            )
        }
    };
    if matches!(
        req,
        Request::ApikeysCreate { .. } | Request::ApikeysList | Request::ApikeysRevoke { .. }
    ) {
        return fail(
            StatusCode::FORBIDDEN,
            "API keys are managed over the admin socket only",
        );
    }
    let resp = tokio::task::spawn_blocking(move || execute(&server, req))
        .await
        .unwrap_or_else(|err| Response {
            ok: false,
            error: format!("command failed: {err}"),
            result: serde_json::Value::Null,
        });
    let status = if resp.ok {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    crate::server::json_response(status, &resp)
}

/// Listens on `path` (replacing a stale socket) with mode 0600, serving until the runtime
/// stops.
///
/// # Errors
/// When the socket cannot be bound.
pub fn listen(server: Arc<Server>, path: &Path) -> std::io::Result<()> {
    if path.exists() {
        std::fs::remove_file(path)?;
    }
    // Bind inside a fresh 0700 directory, narrow the socket to 0600, then move it into
    // place: no moment in which another user could connect, whatever the state directory's
    // mode.
    let parent = path.parent().unwrap_or_else(|| Path::new("."));
    let private = parent.join(format!(".admin-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&private);
    std::fs::create_dir(&private)?;
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700))?;
    let staged = private.join("admin.sock");
    let bound = UnixListener::bind(&staged).and_then(|l| {
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&staged, path)?;
        Ok(l)
    });
    let _ = std::fs::remove_dir_all(&private);
    let listener = bound?;
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                continue;
            };
            let server = Arc::clone(&server);
            tokio::spawn(async move {
                let (r, mut w) = s.into_split();
                let mut line = String::new();
                let mut reader = BufReader::new(tokio::io::AsyncReadExt::take(r, MAX_LINE));
                if reader.read_line(&mut line).await.is_err() {
                    return;
                }
                let resp = match serde_json::from_str::<Request>(&line) {
                    Ok(req) => {
                        let server = Arc::clone(&server);
                        tokio::task::spawn_blocking(move || execute(&server, req))
                            .await
                            .unwrap_or_else(|e| Response {
                                ok: false,
                                error: format!("command failed: {e}"),
                                result: serde_json::Value::Null,
                            })
                    }
                    Err(e) => Response {
                        ok: false,
                        error: format!("malformed request: {e}"),
                        result: serde_json::Value::Null,
                    },
                };
                let mut out = serde_json::to_vec(&resp).unwrap_or_default();
                out.push(b'\n');
                let _ = w.write_all(&out).await;
            });
        }
    });
    Ok(())
}

/// Sends one command to the server listening on `path`.
///
/// # Errors
/// When the socket cannot be reached or the answer is not readable.
pub async fn call(path: &Path, req: &Request) -> anyhow::Result<Response> {
    let mut s = UnixStream::connect(path).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot reach weft-coordd at {}: {e} (is `weft-coordd serve` running with this --state-dir?)",
            path.display()
        )
    })?;
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    s.write_all(&line).await?;
    let mut answer = String::new();
    BufReader::new(s).read_line(&mut answer).await?;
    Ok(serde_json::from_str(&answer)?)
}
