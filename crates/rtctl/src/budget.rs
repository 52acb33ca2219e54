//! GameDisruptionBudgets beside games: `apply -f` / `diff -f` of budget documents, `get
//! budgets`, `describe budget NAME` and `delete budget NAME`, through
//! `rtm_core::records::budgets`.
//!
//! A budget's COVERED games are those its selector matches now, ALLOWED is how many of them
//! may be down at once (`maxUnavailable` of COVERED, percentages rounded up), HELD the slots
//! controllers hold now (games being disrupted, until they are Ready again).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::time::SystemTime;

use super::apply::{Action, yaml_diff};
use super::client::{Client, check_name};
use super::error::{CliError, Outcome, one_line};
use super::get::games::games_from;
use super::get::{GetArgs, OutputFormat, Selector};
use super::input::BudgetInput;
use super::output::{Table, age_since, note};
use super::shape;
use rtm_core::model::{
    ConditionStatus, GameDisruptionBudget, GameRuntime, REASON_DISRUPTION_BUDGET, Timestamp,
    UPDATE_PENDING,
};
use rtm_core::records::budgets::{BudgetError, HeldSlot};

/// What apply and diff compare of a budget: labels, annotations and spec.
fn comparable(budget: &GameDisruptionBudget) -> GameDisruptionBudget {
    let mut budget = budget.clone();
    budget.metadata.generation = None;
    budget.metadata.resource_version = None;
    budget.metadata.creation_timestamp = None;
    budget
}

fn yaml(budget: &GameDisruptionBudget) -> String {
    serde_yaml::to_string(budget).expect("a budget always serializes")
}

/// What apply would store for `applied` given what is live.
fn plan(
    applied: &GameDisruptionBudget,
    live: Option<&GameDisruptionBudget>,
    now: Timestamp,
) -> (Action, GameDisruptionBudget) {
    let mut desired = comparable(applied);
    match live {
        None => {
            desired.metadata.creation_timestamp = Some(now);
            (Action::Created, desired)
        }
        Some(live) => {
            desired.metadata.creation_timestamp = live.metadata.creation_timestamp;
            desired.metadata.generation = live.metadata.generation;
            let action = if comparable(&desired) == comparable(live) {
                Action::Unchanged
            } else {
                Action::Configured
            };
            (action, desired)
        }
    }
}

/// Applies one budget document (re-reading once when someone else wrote first).
pub(crate) async fn apply_one(
    client: &Client,
    input: &BudgetInput,
    dry_run: bool,
) -> Result<Action, CliError> {
    let name = input.budget.name();
    let doing = format!("writing gamedisruptionbudget/{name}");
    let mut attempt = 0;
    loop {
        attempt += 1;
        let live = client
            .budgets()
            .get(name)
            .await
            .map_err(|e| client.budget_error(e, &doing))?;
        let (action, desired) = plan(&input.budget, live.as_ref(), Timestamp::now());
        if action == Action::Unchanged || dry_run {
            return Ok(action);
        }
        let written = match live
            .as_ref()
            .and_then(|l| l.metadata.resource_version.as_deref())
            .and_then(|rv| rv.parse().ok())
        {
            None => client.budgets().create(&desired).await,
            Some(expected) => client.budgets().update(&desired, expected).await,
        };
        match written {
            Ok(_) => return Ok(action),
            Err(BudgetError::AlreadyExists { .. } | BudgetError::Conflict { .. })
                if attempt < super::apply::WRITE_ATTEMPTS =>
            {
                super::apply::backoff(attempt).await;
            }
            Err(e) => return Err(client.budget_error(e, &doing)),
        }
    }
}

/// The unified diff of a live budget against the applied one, `None` when they agree.
pub(crate) fn unified_diff(
    live: Option<&GameDisruptionBudget>,
    applied: &GameDisruptionBudget,
) -> Option<String> {
    let old = live.map(|l| yaml(&comparable(l)));
    yaml_diff(
        "gamedisruptionbudget",
        applied.name(),
        old,
        &yaml(&comparable(applied)),
    )
}

/// `diff -f` of one budget document.
pub(crate) async fn diff_one(
    client: &Client,
    input: &BudgetInput,
) -> Result<Option<String>, CliError> {
    let name = input.budget.name();
    let live = client
        .budgets()
        .get(name)
        .await
        .map_err(|e| client.budget_error(e, &format!("reading gamedisruptionbudget/{name}")))?;
    Ok(unified_diff(live.as_ref(), &input.budget))
}

/// Everything `get budgets` and `describe budget` show, read at one revision for the games.
struct Fleet {
    budgets: Vec<GameDisruptionBudget>,
    /// The budget keys whose values do not decode, and why.
    invalid: Vec<(String, String)>,
    games: BTreeMap<String, GameRuntime>,
    slots: Vec<HeldSlot>,
}

async fn read_fleet(client: &Client) -> Result<Fleet, CliError> {
    let list = client
        .budgets()
        .list()
        .await
        .map_err(|e| client.budget_error(e, "listing gamedisruptionbudgets"))?;
    let invalid = list
        .invalid
        .iter()
        .map(|(key, error)| (key.clone(), error.to_string()))
        .collect();
    let keys = client.keys();
    let (listings, _) = client
        .list_at_one_revision(&[keys.gameruntimes(), keys.statuses()])
        .await?;
    let (games, _) = games_from(client, &listings[0], &listings[1]);
    let (slots, _) = client
        .budgets()
        .slots()
        .await
        .map_err(|e| client.budget_error(e, "listing budget slots"))?;
    Ok(Fleet {
        budgets: list.items,
        invalid,
        games,
        slots,
    })
}

impl Fleet {
    /// Exit 12 naming every budget that cannot be read (after what could be shown was
    /// shown): while one is unreadable the controllers hold every voluntary recreate back.
    fn corrupt(&self, only: Option<&str>) -> Result<(), CliError> {
        let invalid: Vec<String> = self
            .invalid
            .iter()
            .filter(|(key, _)| only.is_none_or(|name| key.rsplit('/').next() == Some(name)))
            .map(|(key, why)| format!("{key}: {}", one_line(why)))
            .collect();
        if invalid.is_empty() {
            return Ok(());
        }
        Err(CliError::Corrupt {
            message: format!(
                "{} stored gamedisruptionbudget(s) cannot be read, so voluntary recreates wait \
                 ({}); delete it (rtctl delete budget NAME), then apply it again",
                invalid.len(),
                invalid.join("; ")
            ),
        })
    }

    fn covered<'f>(&'f self, budget: &GameDisruptionBudget) -> Vec<&'f GameRuntime> {
        self.games.values().filter(|g| budget.covers(g)).collect()
    }

    fn held<'f>(&'f self, budget: &GameDisruptionBudget) -> Vec<&'f HeldSlot> {
        self.slots
            .iter()
            .filter(|s| s.budget == budget.name())
            .collect()
    }
}

/// The columns of `get budgets`.
const HEADERS: [&str; 7] = [
    "NAME",
    "SELECTOR",
    "MAX-UNAVAILABLE",
    "COVERED",
    "ALLOWED",
    "HELD",
    "AGE",
];

/// One row of `get budgets`.
fn row(budget: &GameDisruptionBudget, covered: usize, held: usize, now: SystemTime) -> Vec<String> {
    vec![
        budget.name().to_owned(),
        budget.spec.selector.to_string(),
        budget.spec.max_unavailable.to_string(),
        covered.to_string(),
        budget.spec.max_unavailable.allowed(covered).to_string(),
        held.to_string(),
        age_since(budget.metadata.creation_timestamp, now),
    ]
}

/// `rtctl get budgets [NAME…]`: a missing named budget fails the command after the others
/// are printed.
pub(crate) async fn get(
    client: &Client,
    names: &[String],
    args: &GetArgs,
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    for name in names {
        check_name(name)?;
    }
    let selector = match &args.selector {
        Some(text) => Selector::parse(text)?,
        None => Selector::default(),
    };
    let fleet = read_fleet(client).await?;
    let mut shown: Vec<&GameDisruptionBudget> = if names.is_empty() {
        fleet.budgets.iter().collect()
    } else {
        names
            .iter()
            .filter_map(|name| fleet.budgets.iter().find(|b| b.name() == name))
            .collect()
    };
    shown.retain(|b| selector.matches(&b.metadata.labels));
    if let Some(fields) = &args.field_selector {
        shown.retain(|b| fields.matches(&serde_json::to_value(b).unwrap_or_default()));
    }
    if let Some(sort_by) = &args.sort_by {
        shape::sort_by_path(&mut shown, sort_by, |b| {
            serde_json::to_value(b).unwrap_or_default()
        });
    }
    let missing: Vec<&String> = names
        .iter()
        .filter(|name| !fleet.budgets.iter().any(|b| b.name() == name.as_str()))
        .collect();
    let only = match names {
        [one] => Some(one.as_str()),
        _ => None,
    };
    if shown.is_empty() && names.is_empty() && !args.output.is_documents() {
        note(&format!(
            "No gamedisruptionbudgets found under prefix {}.",
            client.keys().prefix()
        ));
        fleet.corrupt(None)?;
        return Ok(Outcome::Success);
    }
    if !shown.is_empty() || names.is_empty() {
        print(&fleet, &shown, args, only.is_some(), out)?;
    }
    if let Some(last) = missing.last() {
        // A budget that cannot be read is said as such rather than as missing.
        fleet.corrupt(Some(last))?;
    }
    crate::target::missing_names(&missing, out, |name| not_found(client, name))?;
    fleet.corrupt(only)?;
    Ok(Outcome::Success)
}

/// Prints budgets as `get` asks (`one`: a single budget was asked for by name).
fn print(
    fleet: &Fleet,
    shown: &[&GameDisruptionBudget],
    args: &GetArgs,
    one: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let json_error = |e: serde_json::Error| CliError::internal(format!("cannot print JSON: {e}"));
    let Some(format) = args.output.builtin() else {
        let items = shown
            .iter()
            .map(|b| serde_json::to_value(b).map_err(json_error))
            .collect::<Result<Vec<_>, _>>()?;
        return shape::print_shaped(
            &args.output,
            "GameDisruptionBudgetList",
            &items,
            one,
            args.no_headers,
            out,
        );
    };
    match format {
        OutputFormat::Table | OutputFormat::Wide => {
            let labels = args.labels();
            let mut headers: Vec<String> = HEADERS.iter().map(|h| (*h).to_owned()).collect();
            headers.extend(labels.headers());
            let mut table = Table::with_headers(headers);
            let now = SystemTime::now();
            for budget in shown {
                let mut cells = row(
                    budget,
                    fleet.covered(budget).len(),
                    fleet.held(budget).len(),
                    now,
                );
                cells.extend(labels.cells(Some(&budget.metadata.labels)));
                table.row(cells);
            }
            let text = table.render_as(args.no_headers);
            out.write_all(text.as_bytes())?;
        }
        OutputFormat::Yaml => {
            for (i, budget) in shown.iter().enumerate() {
                if i > 0 {
                    writeln!(out, "---")?;
                }
                out.write_all(yaml(budget).as_bytes())?;
            }
        }
        OutputFormat::Json => {
            let value = match (one, shown) {
                (true, [one]) => serde_json::to_value(one),
                _ => serde_json::to_value(serde_json::json!({
                    "apiVersion": rtm_core::model::API_VERSION,
                    "kind": "GameDisruptionBudgetList",
                    "items": shown,
                })),
            }
            .and_then(|v| serde_json::to_string_pretty(&v))
            .map_err(json_error)?;
            writeln!(out, "{value}")?;
        }
        OutputFormat::Name => {
            for budget in shown {
                writeln!(out, "gamedisruptionbudget/{}", budget.name())?;
            }
        }
    }
    Ok(())
}

fn not_found(client: &Client, name: &str) -> CliError {
    client.budget_error(
        BudgetError::NotFound {
            name: name.to_owned(),
        },
        "reading",
    )
}

/// `rtctl describe budget NAME`.
pub(crate) async fn describe(
    client: &Client,
    name: &str,
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    check_name(name)?;
    let fleet = read_fleet(client).await?;
    let Some(budget) = fleet.budgets.iter().find(|b| b.name() == name) else {
        fleet.corrupt(Some(name))?;
        return Err(not_found(client, name));
    };
    let text = render(
        budget,
        &fleet.covered(budget),
        &fleet.held(budget),
        SystemTime::now(),
    );
    out.write_all(text.as_bytes())?;
    Ok(Outcome::Success)
}

fn field(text: &mut String, label: &str, value: &str) {
    let label = format!("{label}:");
    let _ = writeln!(text, "{label:<18} {value}");
}

/// The description of a budget: its spec, the games it covers, the slots held and the games
/// waiting for one.
fn render(
    budget: &GameDisruptionBudget,
    covered: &[&GameRuntime],
    held: &[&HeldSlot],
    now: SystemTime,
) -> String {
    let mut text = String::new();
    let meta = &budget.metadata;
    field(&mut text, "Name", budget.name());
    let labels: Vec<String> = meta
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    field(
        &mut text,
        "Labels",
        &if labels.is_empty() {
            "<none>".to_owned()
        } else {
            labels.join(",")
        },
    );
    field(
        &mut text,
        "Created",
        &match meta.creation_timestamp {
            Some(t) => format!("{t} ({} ago)", age_since(Some(t), now)),
            None => "<unknown>".to_owned(),
        },
    );
    field(
        &mut text,
        "Generation",
        &meta.generation.map(|g| g.to_string()).unwrap_or_default(),
    );
    let _ = writeln!(text, "Spec:");
    field(&mut text, "  Selector", &budget.spec.selector.to_string());
    field(
        &mut text,
        "  Max Unavailable",
        &budget.spec.max_unavailable.to_string(),
    );
    let allowed = budget.spec.max_unavailable.allowed(covered.len());
    field(
        &mut text,
        "Allowed",
        &format!(
            "{allowed} of {} covered games may be disrupted at once",
            covered.len()
        ),
    );
    let names: Vec<&str> = covered.iter().map(|g| g.metadata.name.as_str()).collect();
    field(
        &mut text,
        "Covered Games",
        &if names.is_empty() {
            "<none>".to_owned()
        } else {
            names.join(" ")
        },
    );
    let _ = writeln!(text, "Held Slots ({}):", held.len());
    if held.is_empty() {
        let _ = writeln!(text, "  <none>");
    } else {
        let mut table = Table::new(["SLOT", "GAME", "HOLDER", "SINCE", "REASON"]);
        for slot in held {
            let (game, holder, since, reason) = match &slot.slot {
                Some(s) => (
                    s.game.clone(),
                    s.holder.clone(),
                    format!("{} ago", age_since(Some(s.since), now)),
                    s.reason.clone(),
                ),
                None => (
                    "<unreadable>".to_owned(),
                    "-".to_owned(),
                    "-".to_owned(),
                    format!("the value at {} does not decode", slot.key),
                ),
            };
            table.row([slot.index.to_string(), game, holder, since, reason]);
        }
        indent(&mut text, &table.render());
    }
    let waiting = waiting(covered);
    let _ = writeln!(text, "Waiting Games ({}):", waiting.len());
    if waiting.is_empty() {
        let _ = writeln!(text, "  <none>");
    } else {
        let mut table = Table::new(["GAME", "SINCE", "MESSAGE"]);
        for (game, since, message) in waiting {
            table.row([
                game.to_owned(),
                since
                    .map(|t| format!("{} ago", age_since(Some(t), now)))
                    .unwrap_or_else(|| "-".to_owned()),
                message.to_owned(),
            ]);
        }
        indent(&mut text, &table.render());
    }
    text
}

/// The covered games whose voluntary disruption waits for a budget slot (UpdatePending True,
/// reason DisruptionBudget): name, since when, the condition's message.
fn waiting<'g>(covered: &[&'g GameRuntime]) -> Vec<(&'g str, Option<Timestamp>, &'g str)> {
    covered
        .iter()
        .filter_map(|game| {
            let condition = game
                .status
                .as_ref()?
                .conditions
                .iter()
                .find(|c| c.type_ == UPDATE_PENDING)?;
            (condition.status == ConditionStatus::True
                && condition.reason == REASON_DISRUPTION_BUDGET)
                .then_some((
                    game.metadata.name.as_str(),
                    condition.last_transition_time,
                    condition.message.as_str(),
                ))
        })
        .collect()
}

fn indent(text: &mut String, block: &str) {
    for line in block.lines() {
        let _ = writeln!(text, "  {line}");
    }
}

/// `rtctl delete budget NAME`.
pub(crate) async fn delete(
    client: &Client,
    name: &str,
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    check_name(name)?;
    let doing = format!("deleting gamedisruptionbudget/{name}");
    let key = client.keys().budget(name);
    let Some(kv) = client.raw(&key).await? else {
        return Err(not_found(client, name));
    };
    client
        .budgets()
        .delete(name, kv.mod_revision)
        .await
        .map_err(|e| client.budget_error(e, &doing))?;
    writeln!(out, "gamedisruptionbudget/{name} deleted")?;
    Ok(Outcome::Success)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtm_core::model::budget::{LabelSelector, MaxUnavailable};
    use rtm_core::model::fixtures::game;
    use rtm_core::model::{Condition, GameRuntimeStatus};
    use rtm_core::records::budgets::Slot;

    fn budget(max: MaxUnavailable) -> GameDisruptionBudget {
        GameDisruptionBudget::new(
            "casual",
            LabelSelector {
                match_labels: [("tier".to_owned(), "casual".to_owned())].into(),
                match_expressions: Vec::new(),
            },
            max,
        )
    }

    #[test]
    fn a_row_shows_allowed_as_max_unavailable_of_the_covered_games() {
        let now = SystemTime::now();
        let cells = row(&budget(MaxUnavailable::Percent(20)), 11, 1, now);
        assert_eq!(cells[..6], ["casual", "tier=casual", "20%", "11", "3", "1"]);
        let cells = row(&budget(MaxUnavailable::Count(2)), 0, 0, now);
        assert_eq!(cells[2..5], ["2", "0", "2"]);
    }

    #[test]
    fn apply_of_an_unchanged_budget_writes_nothing() {
        let applied = budget(MaxUnavailable::Count(2));
        let mut live = applied.clone();
        live.metadata.generation = Some(3);
        live.metadata.resource_version = Some("17".into());
        live.metadata.creation_timestamp = Some(Timestamp::from_unix_seconds(1_700_000_000));
        assert_eq!(
            plan(&applied, Some(&live), Timestamp::now()).0,
            Action::Unchanged
        );
        assert_eq!(unified_diff(Some(&live), &applied), None);
        let changed = budget(MaxUnavailable::Count(3));
        let (action, desired) = plan(&changed, Some(&live), Timestamp::now());
        assert_eq!(action, Action::Configured);
        assert_eq!(
            desired.metadata.creation_timestamp,
            live.metadata.creation_timestamp
        );
        let text = unified_diff(Some(&live), &changed).unwrap();
        assert!(
            text.contains("-  maxUnavailable: 2\n+  maxUnavailable: 3\n"),
            "{text}"
        );
    }

    #[test]
    fn a_description_lists_held_slots_and_waiting_games() {
        let now = SystemTime::now();
        let mut waiting_game = game("g2").build();
        waiting_game.status = Some(GameRuntimeStatus {
            conditions: vec![Condition {
                type_: UPDATE_PENDING.into(),
                status: ConditionStatus::True,
                reason: REASON_DISRUPTION_BUDGET.into(),
                message: "waits for a slot of budget casual (2 of 2 held)".into(),
                last_transition_time: None,
            }],
            ..GameRuntimeStatus::default()
        });
        let held_game = game("g1").build();
        let slot = HeldSlot {
            budget: "casual".into(),
            index: 0,
            key: "/rtmanager/budget-slots/casual/0".into(),
            slot: Some(Slot {
                game: "g1".into(),
                holder: "node-a-1".into(),
                since: Timestamp::now(),
                reason: "spec change (generation 4)".into(),
            }),
            lease: 7,
            create_revision: 9,
        };
        let text = render(
            &budget(MaxUnavailable::Count(1)),
            &[&held_game, &waiting_game],
            &[&slot],
            now,
        );
        assert!(text.contains("Covered Games:     g1 g2"), "{text}");
        assert!(text.contains("1 of 2 covered games"), "{text}");
        assert!(text.contains("Held Slots (1):"), "{text}");
        assert!(text.contains("node-a-1"), "{text}");
        assert!(text.contains("spec change (generation 4)"), "{text}");
        assert!(text.contains("Waiting Games (1):"), "{text}");
        assert!(text.contains("waits for a slot of budget casual"), "{text}");
    }
}
