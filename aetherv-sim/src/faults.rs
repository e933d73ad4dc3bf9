//! Fault injection: per-host plans of seeded, deterministic faults.
//!
//! A [`FaultPlan`] is a list of rules, each a [`Fault`] with a [`Trigger`] and optionally the
//! WS-Man action it applies to. A [`FaultEngine`] evaluates the plan as requests and commands
//! arrive; its decisions depend only on the plan (including its seed) and on the order of
//! requests, never on the clock, so the same run repeats exactly.
//!
//! HTTP-level faults (latency, outage, dropped connection, HTTP status, WS-Man fault) are
//! applied by the endpoint's request interceptor; command-level faults (hang, fail) by the
//! command handler. Each rule counts only the requests (or commands) it applies to, so
//! `Trigger::Nth(2)` on action `Command` means "the second Command request".

use std::time::Duration;

use aetherv_winrm::WsmanFault;

use crate::rng::{SimRng, mix};

/// What goes wrong.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Delay the request by `base` plus a deterministic fraction of `jitter`.
    Latency {
        /// Fixed part.
        base: Duration,
        /// Upper bound of the seeded random part.
        jitter: Duration,
    },
    /// The host goes down: this request's connection is dropped and new connections are
    /// refused for `duration`, after which the host comes back.
    Outage {
        /// How long the host stays down.
        duration: Duration,
    },
    /// Close the connection without answering.
    DropConnection,
    /// Answer with this HTTP status and an empty body.
    HttpStatus(u16),
    /// Answer with this WS-Man fault.
    WsmanFault(Box<WsmanFault>),
    /// A command whose script name or command line contains `pattern` (case-insensitive)
    /// never finishes (until the client terminates it), like a hung provisioning step.
    HangCommand {
        /// Script name (e.g. `Get-HostFacts`) or command line fragment.
        pattern: String,
    },
    /// A command whose script name or command line contains `pattern` fails: a host script
    /// answers `{"ok":false,"error":{"code":"SimulatedFailure",...}}`, any other command
    /// writes `message` to stderr; both exit with `exit_code`.
    FailCommand {
        /// Script name or command line fragment.
        pattern: String,
        /// Exit code.
        exit_code: i64,
        /// Error message.
        message: String,
    },
    /// A move started by this host (`Move-ManagedVm`, `Move-VmClusterRole`) fails when it
    /// reaches `at_percent`, as a migration whose network connection breaks: the job ends
    /// failed before its switch-over and the VM keeps running on the source (a move with
    /// storage leaves its partly copied files in the destination folder).
    FailMigration {
        /// Where the move fails (percent, below the switch-over to keep the VM on the source).
        at_percent: u8,
    },
}

/// The scripts that start moves (what [`Fault::FailMigration`] applies to).
pub const MOVE_SCRIPTS: [&str; 2] = [
    aetherv_hyperv::ops::scripts::MOVE_MANAGED_VM,
    aetherv_hyperv::ops::scripts::MOVE_VM_CLUSTER_ROLE,
];

impl Fault {
    fn is_command_level(&self) -> bool {
        matches!(
            self,
            Self::HangCommand { .. } | Self::FailCommand { .. } | Self::FailMigration { .. }
        )
    }
}

/// When a rule fires, counting only the requests or commands the rule applies to (1-based).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Trigger {
    /// Every time.
    Always,
    /// Only the n-th time.
    Nth(u64),
    /// The first n times.
    FirstN(u64),
    /// Every time after the first n.
    AfterN(u64),
    /// Every n-th time.
    EveryNth(u64),
    /// With this probability, decided by a hash of the plan seed, the rule and the count.
    Probability(f64),
}

impl Trigger {
    fn fires(self, seed: u64, rule: usize, n: u64) -> bool {
        match self {
            Self::Always => true,
            Self::Nth(k) => n == k,
            Self::FirstN(k) => n <= k,
            Self::AfterN(k) => n > k,
            Self::EveryNth(k) => k > 0 && n.is_multiple_of(k),
            Self::Probability(p) => unit(seed, rule, n, 0) < p,
        }
    }
}

/// A seeded value in `[0, 1)` for (seed, rule, count, purpose).
fn unit(seed: u64, rule: usize, n: u64, purpose: u64) -> f64 {
    let mut rng = SimRng::new(mix(seed ^ mix((rule as u64) << 32 ^ purpose)) ^ mix(n));
    rng.unit()
}

/// One rule of a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultRule {
    /// The fault.
    pub fault: Fault,
    /// When it fires.
    pub trigger: Trigger,
    /// For HTTP-level faults: the WS-Man action it applies to, by its last path segment
    /// (`Create`, `Command`, `Receive`, `Send`, `Signal`, `Delete`), case-insensitive; `None`
    /// for every request (including authentication legs).
    pub action: Option<String>,
}

/// A host's fault plan.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultPlan {
    /// Seed for probabilistic triggers and latency jitter.
    pub seed: u64,
    /// Rules, evaluated in order.
    pub rules: Vec<FaultRule>,
}

impl FaultPlan {
    /// An empty plan with this seed.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            rules: Vec::new(),
        }
    }

    /// Adds `base` (+ up to `jitter`) of latency to every request.
    pub fn latency(self, base: Duration, jitter: Duration) -> Self {
        self.rule(Fault::Latency { base, jitter }, Trigger::Always)
    }

    /// Adds a rule applying to every request (or command).
    pub fn rule(mut self, fault: Fault, trigger: Trigger) -> Self {
        self.rules.push(FaultRule {
            fault,
            trigger,
            action: None,
        });
        self
    }

    /// Adds a rule applying to requests with this WS-Man action (`Command`, `Receive`, ...).
    pub fn rule_on(mut self, action: &str, fault: Fault, trigger: Trigger) -> Self {
        self.rules.push(FaultRule {
            fault,
            trigger,
            action: Some(action.to_owned()),
        });
        self
    }

    /// Whether the plan has no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// What the interceptor does with one HTTP request.
#[derive(Debug, Clone, PartialEq)]
pub enum HttpDecision {
    /// Process normally.
    Continue,
    /// Wait, then process normally.
    Delay(Duration),
    /// Answer with this status.
    Status(u16),
    /// Answer with this fault.
    Fault(Box<WsmanFault>),
    /// Close the connection.
    Drop,
    /// Close the connection and refuse new ones for this long.
    Outage(Duration),
}

/// What the command handler does with one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandDecision {
    /// Run it.
    Run,
    /// Never finish.
    Hang,
    /// Fail with this exit code and message.
    Fail {
        /// Exit code.
        exit_code: i64,
        /// Message.
        message: String,
    },
    /// Run it; a move it starts fails at this percentage.
    RunFailingMigration {
        /// Where the move fails.
        at_percent: u8,
    },
}

/// Evaluates a [`FaultPlan`] over a sequence of requests and commands.
#[derive(Debug, Clone, Default)]
pub struct FaultEngine {
    plan: FaultPlan,
    counts: Vec<u64>,
}

fn action_matches(filter: Option<&str>, action: Option<&str>) -> bool {
    match (filter, action) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(f), Some(a)) => {
            let last = a.trim().rsplit('/').next().unwrap_or(a);
            last.eq_ignore_ascii_case(f.trim())
        }
    }
}

impl FaultEngine {
    /// An engine at the start of `plan`.
    pub fn new(plan: FaultPlan) -> Self {
        let counts = vec![0; plan.rules.len()];
        Self { plan, counts }
    }

    /// The plan being evaluated.
    pub fn plan(&self) -> &FaultPlan {
        &self.plan
    }

    /// Decides what happens to a request with this WS-Man action (`None` for requests without
    /// a SOAP action, such as authentication legs).
    pub fn on_request(&mut self, action: Option<&str>) -> HttpDecision {
        let seed = self.plan.seed;
        let mut delay = Duration::ZERO;
        let mut decision: Option<HttpDecision> = None;
        for (i, rule) in self.plan.rules.iter().enumerate() {
            if rule.fault.is_command_level() || !action_matches(rule.action.as_deref(), action) {
                continue;
            }
            self.counts[i] += 1;
            let n = self.counts[i];
            if !rule.trigger.fires(seed, i, n) {
                continue;
            }
            match &rule.fault {
                Fault::Latency { base, jitter } => {
                    delay += *base + jitter.mul_f64(unit(seed, i, n, 1));
                }
                fault if decision.is_none() => {
                    decision = Some(match fault {
                        Fault::Outage { duration } => HttpDecision::Outage(*duration),
                        Fault::DropConnection => HttpDecision::Drop,
                        Fault::HttpStatus(status) => HttpDecision::Status(*status),
                        Fault::WsmanFault(f) => HttpDecision::Fault(f.clone()),
                        _ => HttpDecision::Continue,
                    });
                }
                _ => {}
            }
        }
        match decision {
            Some(d) => d,
            None if delay > Duration::ZERO => HttpDecision::Delay(delay),
            None => HttpDecision::Continue,
        }
    }

    /// Decides what happens to a command described by `subjects` (the script name, the
    /// command line, the decoded PowerShell script; any of them may match a rule's pattern).
    pub fn on_command(&mut self, subjects: &[&str]) -> CommandDecision {
        let seed = self.plan.seed;
        let mut decision = None;
        for (i, rule) in self.plan.rules.iter().enumerate() {
            let matches = match &rule.fault {
                Fault::HangCommand { pattern } | Fault::FailCommand { pattern, .. } => {
                    let needle = pattern.to_ascii_lowercase();
                    subjects
                        .iter()
                        .any(|s| s.to_ascii_lowercase().contains(&needle))
                }
                // The script name is the first subject.
                Fault::FailMigration { .. } => subjects
                    .first()
                    .is_some_and(|name| MOVE_SCRIPTS.iter().any(|s| s.eq_ignore_ascii_case(name))),
                _ => continue,
            };
            if !matches {
                continue;
            }
            self.counts[i] += 1;
            if decision.is_some() || !rule.trigger.fires(seed, i, self.counts[i]) {
                continue;
            }
            decision = Some(match &rule.fault {
                Fault::HangCommand { .. } => CommandDecision::Hang,
                Fault::FailCommand {
                    exit_code, message, ..
                } => CommandDecision::Fail {
                    exit_code: *exit_code,
                    message: message.clone(),
                },
                Fault::FailMigration { at_percent } => CommandDecision::RunFailingMigration {
                    at_percent: *at_percent,
                },
                _ => CommandDecision::Run,
            });
        }
        decision.unwrap_or(CommandDecision::Run)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const ACTIONS: [Option<&str>; 4] = [
        None,
        Some("http://schemas.xmlsoap.org/ws/2004/09/transfer/Create"),
        Some("http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Command"),
        Some("http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Receive"),
    ];

    fn plan(seed: u64) -> FaultPlan {
        FaultPlan::new(seed)
            .latency(Duration::from_millis(5), Duration::from_millis(20))
            .rule(Fault::HttpStatus(500), Trigger::Probability(0.1))
            .rule_on("Receive", Fault::DropConnection, Trigger::Probability(0.05))
            .rule_on(
                "Command",
                Fault::WsmanFault(Box::new(WsmanFault::access_denied())),
                Trigger::EveryNth(7),
            )
            .rule(
                Fault::FailCommand {
                    pattern: "Get-HostFacts".to_owned(),
                    exit_code: 1,
                    message: "boom".to_owned(),
                },
                Trigger::Probability(0.5),
            )
    }

    fn run(seed: u64) -> (Vec<HttpDecision>, Vec<CommandDecision>) {
        let mut engine = FaultEngine::new(plan(seed));
        let http = (0..400)
            .map(|i| engine.on_request(ACTIONS[i % ACTIONS.len()]))
            .collect();
        let commands = (0..100)
            .map(|_| engine.on_command(&["Get-HostFacts", "powershell.exe -File x"]))
            .collect();
        (http, commands)
    }

    #[test]
    fn plans_are_deterministic_for_a_seed() {
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
        let (http, commands) = run(42);
        let statuses = http
            .iter()
            .filter(|d| **d == HttpDecision::Status(500))
            .count();
        assert!((15..=70).contains(&statuses), "{statuses} of 400 at p=0.1");
        assert!(http.iter().any(|d| matches!(d, HttpDecision::Delay(_))));
        assert!(http.iter().any(|d| matches!(d, HttpDecision::Fault(_))));
        let fails = commands
            .iter()
            .filter(|d| matches!(d, CommandDecision::Fail { .. }))
            .count();
        assert!((25..=75).contains(&fails), "{fails} of 100 at p=0.5");
    }

    #[test]
    fn triggers_count_only_matching_requests() {
        let mut engine = FaultEngine::new(FaultPlan::new(1).rule_on(
            "Command",
            Fault::HttpStatus(503),
            Trigger::Nth(2),
        ));
        let cmd = ACTIONS[2];
        assert_eq!(engine.on_request(ACTIONS[1]), HttpDecision::Continue);
        assert_eq!(engine.on_request(cmd), HttpDecision::Continue);
        assert_eq!(engine.on_request(None), HttpDecision::Continue);
        assert_eq!(engine.on_request(cmd), HttpDecision::Status(503));
        assert_eq!(engine.on_request(cmd), HttpDecision::Continue);
    }

    #[test]
    fn latency_is_bounded_and_terminal_faults_win() {
        let mut engine = FaultEngine::new(
            FaultPlan::new(9)
                .latency(Duration::from_millis(10), Duration::from_millis(10))
                .rule(Fault::DropConnection, Trigger::Nth(3)),
        );
        for n in 1..=5 {
            match engine.on_request(None) {
                HttpDecision::Delay(d) => {
                    assert_ne!(n, 3);
                    assert!(d >= Duration::from_millis(10) && d <= Duration::from_millis(20));
                }
                HttpDecision::Drop => assert_eq!(n, 3),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn command_rules_match_patterns_case_insensitively() {
        let mut engine = FaultEngine::new(
            FaultPlan::new(1)
                .rule(
                    Fault::HangCommand {
                        pattern: "provisioning.copyimage".to_owned(),
                    },
                    Trigger::Always,
                )
                .rule(
                    Fault::FailCommand {
                        pattern: "echo".to_owned(),
                        exit_code: 3,
                        message: "no".to_owned(),
                    },
                    Trigger::FirstN(1),
                ),
        );
        assert_eq!(
            engine.on_command(&["Provisioning.CopyImage"]),
            CommandDecision::Hang
        );
        assert_eq!(
            engine.on_command(&["ECHO hi"]),
            CommandDecision::Fail {
                exit_code: 3,
                message: "no".to_owned()
            }
        );
        assert_eq!(engine.on_command(&["echo hi"]), CommandDecision::Run);
        assert_eq!(engine.on_command(&["hostname"]), CommandDecision::Run);
        // HTTP requests are not affected by command rules.
        assert_eq!(engine.on_request(None), HttpDecision::Continue);
    }
}
