//! Key maps: for a key, the server that the sharding layer in front of Redis sends it to,
//! computed exactly as that layer computes it, so respite can tell where a key lives without
//! asking.
//!
//! ```text
//!  nutcracker.yml ──parse──▶ twemproxy::Pool { hash, distribution, hash_tag, servers, ring }
//!                                   │
//!  key ──hash_tag──▶ part ──hashkit::Hash──▶ u32 ──ketama / modula──▶ index into servers
//!                                                   random ──▶ None (any server)
//! ```
//!
//! - `hashkit`: nutcracker 0.5.0's twelve hash functions (`src/hashkit/*.c`), quirks included.
//! - `twemproxy`: a pool read from nutcracker's YAML and its placement (`nc_conf.c`,
//!   `nc_server.c`, `nc_ketama.c`, `nc_modula.c`, `nc_random.c`).
//!
//! Pure logic: nothing here does I/O except `Pool::load` reading the config file. Proven
//! against the real `nutcracker` binary by `tests/keymap.rs`.

pub mod hashkit;
pub mod twemproxy;
