//! Option haggling as a pure state machine: an option in, the bytes to answer and what happens
//! next out. The server's I/O loop only moves bytes.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::export::Export;
use crate::protocol::{
    self, BASE_ALLOCATION, FLAG_CAN_MULTI_CONN, FLAG_HAS_FLAGS, FLAG_READ_ONLY, FLAG_SEND_CACHE,
    FLAG_SEND_DF, FLAG_SEND_FLUSH, INFO_DESCRIPTION, INFO_NAME, OPT_ABORT, OPT_EXPORT_NAME, OPT_GO,
    OPT_INFO, OPT_LIST, OPT_LIST_META_CONTEXT, OPT_SET_META_CONTEXT, OPT_STRUCTURED_REPLY, REP_ACK,
    REP_ERR_INVALID, REP_ERR_SHUTDOWN, REP_ERR_UNKNOWN, REP_ERR_UNSUP, REP_INFO, REP_META_CONTEXT,
    REP_SERVER, option_reply,
};

/// The exports by name.
pub type Exports = BTreeMap<String, Arc<dyn Export>>;

/// The metadata context id given to `base:allocation`.
pub const BASE_ALLOCATION_ID: u32 = 1;

/// What the connection does after answering an option.
#[derive(Debug)]
pub enum Next {
    /// Read the next option.
    Option,
    /// Enter transmission with this export.
    Transmission(Chosen),
    /// Close the connection (after sending the answer, if any).
    Close,
}

/// The export chosen for transmission, and what was negotiated for it.
#[derive(Debug, Clone)]
pub struct Chosen {
    /// Its name.
    pub name: String,
    /// The export.
    pub export: Arc<dyn Export>,
    /// Structured replies are in use.
    pub structured: bool,
    /// `base:allocation` was selected for this export.
    pub block_status: bool,
}

/// The answer to one option.
#[derive(Debug)]
pub struct Outcome {
    /// Bytes to send.
    pub reply: Vec<u8>,
    /// What comes next.
    pub next: Next,
}

/// The state of one connection's option haggling.
#[derive(Debug)]
pub struct Negotiation<'a> {
    exports: &'a Exports,
    no_zeroes: bool,
    structured: bool,
    /// The export `base:allocation` was last selected for.
    meta_export: Option<Vec<u8>>,
    shutting_down: bool,
}

impl<'a> Negotiation<'a> {
    /// A negotiation over `exports`; `client_flags` as the client sent them.
    #[must_use]
    pub fn new(exports: &'a Exports, client_flags: u32) -> Self {
        Self {
            exports,
            no_zeroes: client_flags & protocol::CLIENT_NO_ZEROES != 0,
            structured: false,
            meta_export: None,
            shutting_down: false,
        }
    }

    /// From now on, refuse options (other than `ABORT`) with `NBD_REP_ERR_SHUTDOWN`.
    pub fn shut_down(&mut self) {
        self.shutting_down = true;
    }

    /// Whether structured replies were negotiated.
    #[must_use]
    pub fn structured(&self) -> bool {
        self.structured
    }

    fn transmission_flags(&self) -> u16 {
        let mut flags = FLAG_HAS_FLAGS
            | FLAG_READ_ONLY
            | FLAG_SEND_FLUSH
            | FLAG_CAN_MULTI_CONN
            | FLAG_SEND_CACHE;
        if self.structured {
            flags |= FLAG_SEND_DF;
        }
        flags
    }

    fn find(&self, name: &[u8]) -> Option<(String, Arc<dyn Export>)> {
        let name = std::str::from_utf8(name).ok()?;
        if name.is_empty() && self.exports.len() == 1 {
            // The default export: the only one there is.
            return self
                .exports
                .iter()
                .next()
                .map(|(n, e)| (n.clone(), Arc::clone(e)));
        }
        self.exports
            .get(name)
            .map(|e| (name.to_owned(), Arc::clone(e)))
    }

    fn chosen(&self, name: String, export: Arc<dyn Export>) -> Chosen {
        let block_status = self.structured && self.meta_export.as_deref() == Some(name.as_bytes());
        Chosen {
            name,
            export,
            structured: self.structured,
            block_status,
        }
    }

    /// Answers option `option` with data `data`.
    pub fn handle(&mut self, option: u32, data: &[u8]) -> Outcome {
        let answer = |reply_type, text: &str| option_reply(option, reply_type, text.as_bytes());
        let keep_going = |reply: Vec<u8>| Outcome {
            reply,
            next: Next::Option,
        };
        if option == OPT_ABORT {
            return Outcome {
                reply: option_reply(option, REP_ACK, &[]),
                next: Next::Close,
            };
        }
        if self.shutting_down {
            return match option {
                // No error can be sent for EXPORT_NAME.
                OPT_EXPORT_NAME => Outcome {
                    reply: Vec::new(),
                    next: Next::Close,
                },
                _ => keep_going(answer(REP_ERR_SHUTDOWN, "the server is shutting down")),
            };
        }
        match option {
            OPT_EXPORT_NAME => match self.find(data) {
                Some((name, export)) => Outcome {
                    reply: protocol::export_name_reply(
                        export.size(),
                        self.transmission_flags(),
                        self.no_zeroes,
                    ),
                    next: Next::Transmission(self.chosen(name, export)),
                },
                None => Outcome {
                    reply: Vec::new(),
                    next: Next::Close,
                },
            },
            OPT_LIST => {
                if !data.is_empty() {
                    return keep_going(answer(REP_ERR_INVALID, "LIST takes no data"));
                }
                let mut reply = Vec::new();
                for name in self.exports.keys() {
                    reply.extend(option_reply(
                        option,
                        REP_SERVER,
                        &protocol::server_entry(name),
                    ));
                }
                reply.extend(option_reply(option, REP_ACK, &[]));
                keep_going(reply)
            }
            OPT_INFO | OPT_GO => self.info(option, data),
            OPT_STRUCTURED_REPLY => {
                if !data.is_empty() {
                    return keep_going(answer(REP_ERR_INVALID, "STRUCTURED_REPLY takes no data"));
                }
                if self.structured {
                    return keep_going(answer(REP_ERR_INVALID, "structured replies already on"));
                }
                self.structured = true;
                keep_going(option_reply(option, REP_ACK, &[]))
            }
            OPT_LIST_META_CONTEXT | OPT_SET_META_CONTEXT => {
                keep_going(self.meta_context(option, data))
            }
            _ => keep_going(answer(REP_ERR_UNSUP, "option not supported")),
        }
    }

    fn info(&mut self, option: u32, data: &[u8]) -> Outcome {
        let keep_going = |reply: Vec<u8>| Outcome {
            reply,
            next: Next::Option,
        };
        let Some(request) = protocol::parse_info_request(data) else {
            return keep_going(option_reply(
                option,
                REP_ERR_INVALID,
                b"malformed INFO/GO data",
            ));
        };
        let Some((name, export)) = self.find(&request.name) else {
            return keep_going(option_reply(option, REP_ERR_UNKNOWN, b"no such export"));
        };
        let mut reply = option_reply(
            option,
            REP_INFO,
            &protocol::info_export(export.size(), self.transmission_flags()),
        );
        // Block sizes are the defaults a client may assume anyway, so they go out unasked.
        reply.extend(option_reply(option, REP_INFO, &protocol::info_block_size()));
        if request.requests.contains(&INFO_NAME) {
            reply.extend(option_reply(
                option,
                REP_INFO,
                &protocol::info_text(INFO_NAME, &name),
            ));
        }
        let description = export.description();
        if request.requests.contains(&INFO_DESCRIPTION) && !description.is_empty() {
            reply.extend(option_reply(
                option,
                REP_INFO,
                &protocol::info_text(INFO_DESCRIPTION, &description),
            ));
        }
        reply.extend(option_reply(option, REP_ACK, &[]));
        let next = if option == OPT_GO {
            Next::Transmission(self.chosen(name, export))
        } else {
            Next::Option
        };
        Outcome { reply, next }
    }

    fn meta_context(&mut self, option: u32, data: &[u8]) -> Vec<u8> {
        let setting = option == OPT_SET_META_CONTEXT;
        if setting {
            // Replaced even when this request fails.
            self.meta_export = None;
        }
        if !self.structured {
            return option_reply(
                option,
                REP_ERR_INVALID,
                b"negotiate structured replies first",
            );
        }
        let Some(request) = protocol::parse_meta_context_request(data) else {
            return option_reply(option, REP_ERR_INVALID, b"malformed meta context data");
        };
        if request.queries.iter().any(|q| !q.contains(&b':')) {
            return option_reply(option, REP_ERR_INVALID, b"a query has no namespace");
        }
        let Some((canonical, _)) = self.find(&request.name) else {
            return option_reply(option, REP_ERR_UNKNOWN, b"no such export");
        };
        let matches = if request.queries.is_empty() {
            // No query: listing shows every context; setting selects none.
            !setting
        } else {
            request.queries.iter().any(|q| {
                q.as_slice() == BASE_ALLOCATION.as_bytes() || (!setting && q.as_slice() == b"base:")
            })
        };
        let mut reply = Vec::new();
        if matches {
            let id = if setting { BASE_ALLOCATION_ID } else { 0 };
            reply.extend(option_reply(
                option,
                REP_META_CONTEXT,
                &protocol::meta_context_entry(id, BASE_ALLOCATION),
            ));
            if setting {
                self.meta_export = Some(canonical.into_bytes());
            }
        }
        reply.extend(option_reply(option, REP_ACK, &[]));
        reply
    }
}

#[cfg(test)]
mod tests;
