//! `tollgate route-test FILE PROMPT…`: where semantic routing sends each prompt and how near
//! the nearest descriptions and utterances are, so they can be tuned before traffic does it.

use std::fmt::Write as _;

use crate::gateway::snapshot::Snapshot;
use crate::net::upstream::Upstreams;
use crate::plugins::Plugin;

/// How many of the nearest texts are shown per prompt.
const SHOWN: usize = 3;

/// The report for `prompts` over every semantic balancer of `snap` (calls each one's
/// embeddings provider).
pub async fn report(snap: &Snapshot, prompts: &[String]) -> Result<String, String> {
    let upstreams = Upstreams::new();
    let mut out = String::new();
    let mut found = false;
    for p in &snap.plugins {
        let Plugin::AiProxy(ai) = &p.plugin else {
            continue;
        };
        let Some(router) = &ai.semantic else { continue };
        found = true;
        let route = p
            .route
            .and_then(|r| snap.routes.get(r))
            .and_then(|r| r.name.clone())
            .unwrap_or_else(|| "(no route)".into());
        let _ = writeln!(out, "{} {} on route {route}", p.name, p.id);
        let name = |i: &usize| {
            ai.targets
                .get(*i)
                .map(|t| {
                    format!(
                        "{}/{}",
                        t.provider.as_str(),
                        t.model_name.as_deref().unwrap_or("?")
                    )
                })
                .unwrap_or_default()
        };
        for prompt in prompts {
            let (near, matched) = router.explain(&upstreams, prompt).await?;
            let goes = match near.first() {
                Some(n) if matched => n.targets.iter().map(name).collect::<Vec<_>>(),
                _ => router.catchall().iter().map(name).collect(),
            };
            let to = if goes.is_empty() {
                "refused (400: nothing within the threshold and no CATCHALL target)".to_string()
            } else if matched {
                goes.join(", ")
            } else {
                format!("CATCHALL {}", goes.join(", "))
            };
            let _ = writeln!(out, "  {prompt:?}\n    → {to}");
            for n in near.iter().take(SHOWN) {
                let what = if n.text == n.description {
                    format!("description {:?}", n.description)
                } else {
                    format!("utterance {:?} of {:?}", n.text, n.description)
                };
                let _ = writeln!(out, "      {:.4}  {what}", n.distance);
            }
        }
    }
    if !found {
        return Err(
            "no ai-proxy-advanced plugin with balancer.algorithm 'semantic' in this configuration"
                .into(),
        );
    }
    Ok(out)
}
