//! Fan-outs in the loop: choosing the targets, sending each part its request, and filling the
//! client's slot with the merge once every part is answered (plans and merges: `fanout/`).

use super::Proxy;
use crate::backend::Origin;
use crate::command::{fit, FanoutCmd, Fit};
use crate::conns::ConnRef;
use crate::fanout::{self, merge, Fanout, Merge};
use crate::request::Request;
use crate::resp;
use crate::upstream::{Group, Upstream};
use bytes::Bytes;

impl Proxy {
    /// Starts a fan-out of `req` for slot `seq` of `client`; the merged reply fills the slot.
    pub(super) fn start_fanout(
        &mut self,
        client: ConnRef,
        seq: u64,
        cmd: FanoutCmd,
        req: &Request,
        info: Option<String>,
    ) {
        let origin = Origin::Client {
            token: client.token,
            gen: client.gen,
            seq,
            n: 1,
        };
        let targets = match self.fanout_targets(cmd) {
            Ok(targets) => targets,
            Err(answer) => return self.complete(origin, answer),
        };
        let labels: Vec<String> = targets
            .iter()
            .map(|&u| self.ups.get(u).label.clone())
            .collect();
        let plan = match fanout::plan(cmd, req, &labels, info) {
            Ok(plan) => plan,
            Err(answer) => return self.complete(origin, answer),
        };
        let part_labels = plan.parts.iter().map(|&i| labels[i].clone()).collect();
        // A kill must not queue behind the script it kills: it goes on a connection of its own;
        // so does what may make backends of a tier not known yet close their connection.
        let to_backends = targets.first().is_some_and(|u| u.group == Group::Backend);
        let fits = if to_backends {
            fit(self.ups.tier, req)
        } else {
            Fit::Shared
        };
        let own_connection = match fits {
            Fit::Refuse(why) => return self.complete(origin, resp::error(&why)),
            Fit::Alone => true,
            Fit::Shared => plan.merge == Merge::AnyKilled,
        };
        let id = self
            .fanouts
            .insert(Fanout::new(client, seq, plan.merge, part_labels));
        for (part, &i) in plan.parts.iter().enumerate() {
            let u = targets[i];
            let conn = if own_connection {
                self.open_oneshot_conn(u)
            } else {
                self.backend_conn(u, 0)
            };
            match conn {
                Some(conn) => {
                    self.ups.get_mut(u).requests += 1;
                    self.enqueue(conn, Origin::Fanout { id, part }, plan.sub.clone());
                }
                None => {
                    let (kind, label) = (u.kind(), &self.ups.get(u).label);
                    let failed = resp::error(&format!("ERR {kind} {label} connection failed"));
                    self.fanout_part_done(id, part, failed);
                }
            }
        }
    }

    /// Where a fan-out goes: the shard masters, sorted by address, or (without shards, for
    /// `SCRIPT`, `FUNCTION`) every healthy backend; `CONFIG GET` asks one backend. `Err` is the
    /// reply when there is nowhere to go.
    fn fanout_targets(&mut self, cmd: FanoutCmd) -> Result<Vec<Upstream>, Bytes> {
        let targets = if cmd == FanoutCmd::ConfigGet {
            let picked = self.ups.pick(&mut self.picker);
            picked.map(Upstream::backend).into_iter().collect()
        } else if self.ups.have_shards() {
            let set = self
                .ups
                .shard_set()
                .map_err(|e| resp::error(&format!("ERR {e}")))?;
            set.into_iter().map(Upstream::shard).collect()
        } else {
            self.ups.healthy_backends()
        };
        if targets.is_empty() {
            return Err(resp::reply::NO_BACKEND);
        }
        Ok(targets)
    }

    /// Records one part's answer; the last one merges and fills the client's slot.
    pub(super) fn fanout_part_done(&mut self, id: usize, part: usize, reply: Bytes) {
        let Some(parts) = self.fanouts.get_mut(id).and_then(|f| f.answer(part, reply)) else {
            return;
        };
        let f = self.fanouts.remove(id);
        let picker = &mut self.picker;
        let merged = merge(&f.merge, &parts, &f.labels, &mut |n| {
            picker.random_below(n as u64) as usize
        });
        let origin = Origin::Client {
            token: f.client.token,
            gen: f.client.gen,
            seq: f.seq,
            n: 1,
        };
        self.complete(origin, merged);
    }

    /// True if `cmd` has fan-out targets here (else it is forwarded like any command).
    pub(super) fn fans_out(&self, cmd: FanoutCmd) -> bool {
        self.ups.have_shards()
            || matches!(
                cmd,
                FanoutCmd::Script | FanoutCmd::Function | FanoutCmd::ConfigGet
            )
    }
}
