//! Routing: one request, whole and indexed, to where it runs — answered here, forwarded to a
//! backend, fanned out to every shard, sent on a connection of the client's own, or refused.
//!
//! ```text
//!  Request ─▶ AUTH gate ─▶ mode (subscribed, in a transaction...) ─▶ route of its command
//!     Forward │ ForwardUnlessBlock │ Local │ Fanout │ Session │ Reject
//! ```
//!
//! The route of every command is decided once, when the command table is built
//! (`command.rs`); what depends on the arguments (`XREAD ... BLOCK`, `SCRIPT LOAD`, `INFO
//! keyspace`) is read from the request's arguments here.

use super::Proxy;
use crate::backend::Origin;
use crate::client::Mode;
use crate::command::{admin_policy, Admin, FanoutCmd, Local, Route, Session, ADMIN_REFUSED};
use crate::conns::ConnRef;
use crate::request::Request;
use crate::resp::{self, reply};
use log::warn;

impl Proxy {
    /// Routes one request.
    pub(super) fn dispatch(&mut self, token: usize, req: Request) {
        self.stats.total_commands_processed += 1;
        let route = req.cmd.map_or(Route::Forward, |id| self.commands.route(id));
        let must_auth = self.config.password.is_some();
        let now = self.now;
        if req.cmd.is_none() && is_cross_protocol(&req) {
            let peer = self.conns.client(token).map(|c| c.peer);
            warn!(
                "client={token} peer={peer:?} sent POST or Host:, as a browser does: possible \
                 cross-protocol attack (a web page reaching respite); closing it"
            );
            return self.close_client(token, "cross-protocol attack");
        }
        let Some(c) = self.conns.client_mut(token) else {
            return;
        };
        c.last_cmd = req.spec().map_or("unknown", |s| s.name);
        c.last_active = now;
        let allowed = matches!(
            route,
            Route::Local(Local::Auth | Local::Hello | Local::Quit | Local::Reset)
        );
        if must_auth && !c.authed && !allowed {
            self.reply_now(token, &req, reply::NOAUTH);
            return;
        }
        let req = if c.mode != Mode::Normal {
            match self.dispatch_in_mode(token, route, req) {
                Some(req) => req,
                None => return,
            }
        } else {
            req
        };
        self.route(token, route, req);
    }

    /// Sends a request where its route says.
    fn route(&mut self, token: usize, route: Route, req: Request) {
        match route {
            Route::Forward => self.forward(token, req),
            Route::ForwardUnlessBlock if req.has_word(b"BLOCK") => {
                self.dispatch_session(token, Session::Blocking, req)
            }
            Route::ForwardUnlessBlock => self.forward(token, req),
            Route::Local(Local::Info) if self.ups.have_shards() && wants_keyspace(&req) => {
                let sections: Vec<&[u8]> = req.args().skip(1).collect();
                let text = self.info(&sections);
                self.fanout(token, FanoutCmd::Dbsize, &req, Some(text));
            }
            Route::Local(which) => {
                let answer = self.answer_local(token, which, &req);
                self.reply_now(token, &req, answer);
            }
            Route::Fanout(cmd) if self.fans_out(cmd) && fanout_applies(cmd, &req) => {
                self.fanout(token, cmd, &req, None)
            }
            Route::Fanout(_) => self.forward(token, req),
            Route::Session(which) => self.dispatch_session(token, which, req),
            Route::Reject(why) => self.reply_now(token, &req, resp::error(&format!("ERR {why}"))),
            Route::AdminRefused => {
                let name = req.spec().map_or("", |s| s.name);
                let refusal = resp::error(&format!("ERR {name} {ADMIN_REFUSED}"));
                self.reply_now(token, &req, refusal);
            }
            Route::Admin => {
                let container = req.spec().map_or("", |s| s.name);
                match admin_policy(container, req.arg(1).unwrap_or_default()) {
                    Admin::Allow => self.forward(token, req),
                    Admin::Refuse(why) => {
                        self.reply_now(token, &req, resp::error(&format!("ERR {why}")))
                    }
                    Admin::RedactConfig => self.fanout(token, FanoutCmd::ConfigGet, &req, None),
                    Admin::ClusterView if self.ups.cluster => self.answer_cluster_view(token, req),
                    Admin::ClusterChange if self.ups.cluster => {
                        let refusal = "ERR CLUSTER changes are refused by respite: they would \
                                       change the cluster behind it (run them on its nodes)";
                        self.reply_now(token, &req, resp::error(refusal))
                    }
                    Admin::ClusterView | Admin::ClusterChange => self.forward(token, req),
                }
            }
        }
    }

    /// Takes the slot of a fan-out (a barrier: later requests wait for it) and starts it.
    fn fanout(&mut self, token: usize, cmd: FanoutCmd, req: &Request, info: Option<String>) {
        let Some(Origin::Client { gen, seq, .. }) = self.slot_origin(token, req) else {
            return;
        };
        if let Some(c) = self.conns.client_mut(token) {
            c.barrier = true;
        }
        self.start_fanout(ConnRef { token, gen }, seq, cmd, req, info);
    }

    /// True if a request on `route` with `argc` arguments is a barrier in its client's
    /// stream: it waits until the client's earlier requests are answered, and later requests
    /// wait for it.
    pub(super) fn is_barrier(&self, route: Route, argc: usize) -> bool {
        match route {
            // RESET closes the session its earlier requests may still be waiting on.
            Route::Local(Local::Reset) => true,
            // How many confirmations answer it depends on what the earlier ones subscribed.
            Route::Session(Session::Unsubscribe) => argc == 1,
            Route::Fanout(FanoutCmd::Script | FanoutCmd::Function) => true,
            Route::Fanout(_) => self.ups.have_shards(),
            // Switching protocol switches backend connections: earlier requests finish first.
            Route::Local(Local::Hello) => true,
            Route::Session(
                Session::Multi | Session::Watch | Session::Blocking | Session::Subscribe,
            )
            | Route::ForwardUnlessBlock => true,
            _ => false,
        }
    }
}

/// `SCRIPT` and `FUNCTION` fan out only for what loads, removes or kills scripts (so that a
/// script is found, or killed, wherever it runs); every other fan-out command always does.
fn fanout_applies(cmd: FanoutCmd, req: &Request) -> bool {
    let subs: &[&[u8]] = match cmd {
        FanoutCmd::Script => &[b"LOAD", b"FLUSH", b"EXISTS", b"KILL"],
        FanoutCmd::Function => &[b"LOAD", b"DELETE", b"FLUSH", b"RESTORE", b"KILL"],
        _ => return true,
    };
    subs.iter().any(|s| req.arg_is(1, s))
}

/// Redis's guard against cross-protocol scripting: a request named `POST` or `Host:` is an HTTP
/// request a browser was made to send; the client is closed without an answer.
fn is_cross_protocol(req: &Request) -> bool {
    req.arg(0)
        .is_some_and(|n| n.eq_ignore_ascii_case(b"post") || n.eq_ignore_ascii_case(b"host:"))
}

/// True if an `INFO` request includes the keyspace section.
fn wants_keyspace(req: &Request) -> bool {
    req.argc() == 1
        || [&b"keyspace"[..], b"all", b"everything", b"default"]
            .iter()
            .any(|s| req.has_word(s))
}
