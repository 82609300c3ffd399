//! Concurrent pushes of one model end with exactly one champion, the one that applying the
//! pushes one at a time, in the order MLflow numbered their versions, would leave.

use std::sync::{Arc, Barrier};

use model_pusher::registry::{Stage, VersionQuery};

use crate::support::block_on;
use crate::support::fixture::{Fixture, Pushed};
use crate::support::mlflow::{self, Flavor, MlflowServer};

const ROUNDS: usize = 20;

/// Starts one push of the model per accuracy, together, and waits for all of them.
fn push_together(
    server: &MlflowServer,
    model: &str,
    accuracies: &[f64],
    extra: &[&str],
) -> Vec<Pushed> {
    let url = server.url().to_string();
    let barrier = Arc::new(Barrier::new(accuracies.len()));
    let handles: Vec<_> = accuracies
        .iter()
        .map(|accuracy| {
            let fixture = Fixture::accuracy(*accuracy);
            let (barrier, url, model) = (Arc::clone(&barrier), url.clone(), model.to_owned());
            let extra: Vec<String> = extra.iter().map(|arg| arg.to_string()).collect();
            std::thread::spawn(move || {
                let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
                barrier.wait();
                fixture.push(&url, &model, &extra)
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|handle| handle.join().unwrap())
        .collect()
}

/// The champion that applying the promotions one at a time in version order leaves, by the
/// threshold rule (5% relative gain) the pushes use.
fn sequential_champion(initial: (u64, f64), mut pushed: Vec<(u64, f64)>) -> u64 {
    pushed.sort_by_key(|(version, _)| *version);
    let mut champion = initial;
    for (version, accuracy) in pushed {
        if (accuracy - champion.1) / champion.1.abs() >= 0.05 - 1e-9 {
            champion = (version, accuracy);
        }
    }
    champion.0
}

fn rounds(server: &MlflowServer, aliases: bool) {
    let extra: &[&str] = if aliases { &["--mode", "aliases"] } else { &[] };
    let candidates = [
        [0.85, 0.90, 0.95],
        [0.95, 0.85, 0.90],
        [0.90, 0.95, 0.85],
        [0.80, 0.86, 0.82],
    ];
    for round in 0..ROUNDS {
        let model = mlflow::unique_name("race");
        let initial = Fixture::accuracy(0.80).push(server.url().as_str(), &model, extra);
        assert_eq!(initial.verdict(), "promote");

        let accuracies = candidates[round % candidates.len()];
        let pushes = push_together(server, &model, &accuracies, extra);

        let mut pushed = Vec::new();
        for (push, accuracy) in pushes.iter().zip(accuracies) {
            let version: u64 = push.version().parse().unwrap();
            pushed.push((version, accuracy));
            // A push moves only the version it registered and the champion it replaced.
            for action in push.ok()["actions"].as_array().unwrap() {
                let action = action.as_str().unwrap();
                let own = format!("version {version}");
                let replaced = push.ok()["previous_champion"]
                    .as_str()
                    .map(|previous| format!("version {previous} "));
                assert!(
                    action.contains(&own)
                        || replaced.is_some_and(|replaced| action.contains(&replaced))
                        || action.starts_with("logged run"),
                    "round {round}: push of version {version} did {action:?}"
                );
            }
        }
        let expected = sequential_champion((1, 0.80), pushed).to_string();

        let versions = block_on(server.client().search_model_versions(&VersionQuery {
            filter: format!("name = '{model}'"),
            ..VersionQuery::default()
        }))
        .unwrap();
        if aliases {
            let champion = block_on(
                server
                    .client()
                    .get_model_version_by_alias(&model, "champion"),
            )
            .unwrap()
            .map(|version| version.version);
            assert_eq!(
                champion.as_deref(),
                Some(expected.as_str()),
                "round {round}"
            );
        } else {
            let production: Vec<&str> = versions
                .iter()
                .filter(|version| version.current_stage == Stage::Production)
                .map(|version| version.version.as_str())
                .collect();
            assert_eq!(
                production,
                [expected.as_str()],
                "round {round}: {versions:?}"
            );
        }
        assert!(
            versions
                .iter()
                .all(|version| version.tag("model_pusher.state") == Some("done")),
            "round {round}: a push left its version pending"
        );
    }
}

#[test]
fn concurrent_pushes_leave_one_production_version() {
    rounds(mlflow::shared(Flavor::Mlflow3), false);
}

#[test]
fn concurrent_pushes_leave_the_champion_alias_on_the_sequential_choice() {
    rounds(mlflow::shared(Flavor::Mlflow3), true);
}

#[test]
fn concurrent_pushes_leave_one_production_version_with_a_postgres_store() {
    rounds(mlflow::shared(Flavor::Postgres), false);
}

#[test]
fn concurrent_pushes_leave_the_champion_alias_with_a_postgres_store() {
    rounds(mlflow::shared(Flavor::Postgres), true);
}
