//! The action's published contract stays one thing: `action.yml`, the input parser, the README's
//! tables and the image agree, or this fails and says where.

use std::collections::BTreeMap;

use gpu_runner::inputs::{aliases, spec};
use serde::Deserialize;

#[derive(Deserialize)]
struct Action {
    name: String,
    description: String,
    branding: BTreeMap<String, String>,
    inputs: BTreeMap<String, Input>,
    outputs: BTreeMap<String, Output>,
    runs: Runs,
}

#[derive(Deserialize)]
struct Input {
    description: String,
    #[serde(default)]
    required: bool,
    default: Option<String>,
}

#[derive(Deserialize)]
struct Output {
    description: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Runs {
    using: String,
    image: String,
    post_entrypoint: String,
    post_if: Option<String>,
}

const OUTPUTS: &[&str] = &[
    "label",
    "labels",
    "runner-names",
    "instance-id",
    "instance-ids",
    "region",
    "instance-type",
    "availability-zone",
    "market",
    "skipped",
    "head-sha",
];

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("read {path}: {e}"))
}

fn action() -> Action {
    serde_yaml::from_str(&read("action.yml")).expect("action.yml parses")
}

/// The names in the first column of the README table under `heading`.
fn readme_table(heading: &str) -> Vec<String> {
    let readme = read("README.md");
    let start = readme
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("README has no {heading:?} heading"));
    readme[start + heading.len() + 2..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .filter_map(|l| l.split('|').nth(1))
        .map(|cell| cell.trim().trim_matches('`').to_owned())
        .collect()
}

#[test]
fn action_yml_and_the_parser_have_the_same_inputs() {
    let action = action();
    let in_yml: Vec<&str> = action.inputs.keys().map(String::as_str).collect();
    // Renamed inputs keep their old names in action.yml, so that the runner passes them on.
    let mut in_parser: Vec<&str> = spec::ALL
        .iter()
        .map(|s| s.name)
        .chain(aliases::ALIASES.iter().map(|a| a.old))
        .collect();
    in_parser.sort_unstable();
    let missing_in_parser: Vec<_> = in_yml.iter().filter(|n| !in_parser.contains(n)).collect();
    let missing_in_yml: Vec<_> = in_parser.iter().filter(|n| !in_yml.contains(n)).collect();
    assert!(
        missing_in_parser.is_empty() && missing_in_yml.is_empty(),
        "in action.yml but not parsed: {missing_in_parser:?}; parsed but not in action.yml: {missing_in_yml:?}"
    );
}

#[test]
fn action_yml_defaults_are_the_parser_defaults() {
    let action = action();
    for spec in spec::ALL {
        let input = &action.inputs[spec.name];
        assert!(
            !input.description.trim().is_empty(),
            "{} has no description",
            spec.name
        );
        if spec.name == "mode" {
            assert!(input.required, "mode must be required");
            continue;
        }
        assert!(
            !input.required,
            "{} must not be required: each mode checks its own",
            spec.name
        );
        assert_eq!(
            input.default.as_deref(),
            Some(spec.default),
            "default of {} in action.yml",
            spec.name
        );
    }
}

/// An old name has no default (the runner would pass one as if the workflow had set it, and every
/// run would warn about the old name) and says what it became.
#[test]
fn action_yml_keeps_each_old_name_without_a_default() {
    let action = action();
    for alias in aliases::ALIASES {
        let input = &action.inputs[alias.old];
        assert_eq!(input.default.as_deref(), Some(""), "{}", alias.old);
        assert!(!input.required);
        assert!(
            input
                .description
                .starts_with(&format!("Deprecated: the old name of {}.", alias.new.name)),
            "{}: {}",
            alias.old,
            input.description
        );
    }
}

#[test]
fn action_yml_declares_the_outputs() {
    let action = action();
    let mut expected: Vec<&str> = OUTPUTS.to_vec();
    expected.sort_unstable();
    assert_eq!(
        action
            .outputs
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        expected
    );
    assert!(
        action
            .outputs
            .values()
            .all(|o| !o.description.trim().is_empty())
    );
    assert!(!action.name.is_empty() && !action.description.is_empty());
    assert!(action.branding.contains_key("icon") && action.branding.contains_key("color"));
}

#[test]
fn action_yml_runs_the_published_image_of_this_version() {
    let runs = action().runs;
    assert_eq!(runs.using, "docker");
    assert_eq!(
        runs.image,
        format!(
            "docker://ghcr.io/gpu-runner/gpu-runner:{}",
            env!("CARGO_PKG_VERSION")
        ),
        "consumers pull this image; bump it with the crate version"
    );
    assert_eq!(
        runs.post_entrypoint,
        format!("/usr/local/bin/{}", gpu_runner::modes::POST_ENTRYPOINT_NAME)
    );
    assert_eq!(runs.post_if.as_deref(), Some("always()"));
}

/// The release commit names the image by digest: the release workflow's own `sed` line, run on
/// this action.yml with a digest, leaves exactly one `image:` line, the digest's.
#[test]
fn the_release_commit_names_the_published_image_by_its_digest() {
    let workflow = read(".github/workflows/release.yml");
    let sed = workflow
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("sed -i ") && l.contains("action.yml"))
        .expect("the release workflow rewrites action.yml's image");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("action.yml"), read("action.yml")).unwrap();
    let digest = format!("sha256:{}", "ab".repeat(32));
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(sed)
        .current_dir(dir.path())
        .env("IMAGE", "ghcr.io/gpu-runner/gpu-runner")
        .env("VERSION", env!("CARGO_PKG_VERSION"))
        .env("DIGEST", &digest)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let released = std::fs::read_to_string(dir.path().join("action.yml")).unwrap();
    let images: Vec<&str> = released
        .lines()
        .filter(|l| l.trim_start().starts_with("image:"))
        .collect();
    assert_eq!(
        images,
        [format!("  image: docker://ghcr.io/gpu-runner/gpu-runner@{digest}").as_str()]
    );
    assert!(workflow.contains("IMAGE: ghcr.io/gpu-runner/gpu-runner\n"));
}

#[test]
fn the_image_has_the_post_entrypoint() {
    let dockerfile = read("Dockerfile");
    assert!(dockerfile.contains(&format!(
        "ln -s gpu-runner /out/{}",
        gpu_runner::modes::POST_ENTRYPOINT_NAME
    )));
    assert!(dockerfile.contains("COPY --from=build /out/ /usr/local/bin/"));
    assert!(dockerfile.contains("ENTRYPOINT [\"/usr/local/bin/gpu-runner\"]"));
}

/// The inputs that only `machine: kubernetes` reads, and those of warm pools: docs/inputs.md
/// gives each group a section of its own.
const KUBERNETES_INPUTS: &[&str] = &[
    "kubeconfig",
    "eks-cluster",
    "namespace",
    "gpu-count",
    "gpu-resource",
    "node-selector",
    "tolerations",
    "pod-template",
    "runtime-class",
    "pod-image",
    "cpu-request",
    "memory-request",
];
const POOL_INPUTS: &[&str] = &[
    "pool",
    "pool-size",
    "pool-full",
    "pool-instance-id",
    "pool-max-uses",
    "pool-max-age-days",
];

/// docs/inputs.md as the input spec (names, modes, defaults) and action.yml (descriptions) make
/// it. A description's `docs/NAME.md` becomes a link.
fn inputs_page() -> String {
    let action = action();
    let link = |text: &str| {
        let mut out = String::new();
        let mut rest = text;
        while let Some(at) = rest.find("docs/") {
            let (before, after) = rest.split_at(at);
            out.push_str(before);
            let name_len = after[5..]
                .find(|c: char| !(c.is_ascii_lowercase() || c == '-'))
                .unwrap_or(after.len() - 5);
            let page = &after[5..5 + name_len];
            if after[5 + name_len..].starts_with(".md") {
                out.push_str(&format!("[docs/{page}.md]({page}.md)"));
                rest = &after[5 + name_len + 3..];
            } else {
                out.push_str("docs/");
                rest = &after[5..];
            }
        }
        out.push_str(rest);
        out
    };
    let row = |s: &spec::Spec| {
        let input = &action.inputs[s.name];
        let default = if input.required {
            "(required)".to_owned()
        } else if !s.default.is_empty() {
            format!("`{}`", s.default)
        } else {
            spec::EMPTY_MEANS
                .iter()
                .find(|(n, _)| *n == s.name)
                .map(|(_, m)| (*m).to_owned())
                .unwrap_or_default()
        };
        let mode = match s.scope {
            spec::Scope::All => "all",
            spec::Scope::Start => "start",
            spec::Scope::Stop => "stop",
            spec::Scope::Cleanup => "cleanup",
            spec::Scope::StartAndCleanup => "start, cleanup",
            spec::Scope::Retry => "retry",
        };
        let secret = if s.secret {
            " A secret: it is masked."
        } else {
            ""
        };
        format!(
            "| `{}` | {mode} | {default} | {}{secret} |\n",
            s.name,
            link(&input.description)
        )
    };
    type Member = Box<dyn Fn(&spec::Spec) -> bool>;
    let sections: [(&str, &str, Member); 7] = [
        (
            "Every mode",
            "Read by start, stop and cleanup alike: give them the same values.",
            Box::new(|s| s.scope == spec::Scope::All && !KUBERNETES_INPUTS.contains(&s.name)),
        ),
        (
            "start",
            "How the machine is launched, what runs on it and how long it lives.",
            Box::new(|s| {
                matches!(s.scope, spec::Scope::Start | spec::Scope::StartAndCleanup)
                    && !KUBERNETES_INPUTS.contains(&s.name)
                    && !POOL_INPUTS.contains(&s.name)
            }),
        ),
        (
            "Warm pools",
            "Read by start: see [docs/pools.md](pools.md).",
            Box::new(|s| POOL_INPUTS.contains(&s.name)),
        ),
        (
            "Kubernetes",
            "Read only with `machine: kubernetes` (the EC2 inputs then have no effect): see \
             [docs/kubernetes.md](kubernetes.md).",
            Box::new(|s| KUBERNETES_INPUTS.contains(&s.name)),
        ),
        (
            "stop",
            "The start job's outputs, passed on.",
            Box::new(|s| s.scope == spec::Scope::Stop),
        ),
        (
            "cleanup",
            "The janitor of a scheduled workflow: see [docs/cleanup.md](cleanup.md).",
            Box::new(|s| s.scope == spec::Scope::Cleanup),
        ),
        (
            "retry",
            "The re-run of a run whose spot machine AWS took back, in a workflow triggered by \
             `workflow_run`: see [docs/spot.md](spot.md).",
            Box::new(|s| s.scope == spec::Scope::Retry),
        ),
    ];
    let mut page = String::from(
        "# Inputs and outputs\n\n\
         <!-- Generated from src/inputs/spec.rs (names, modes, defaults) and action.yml \
         (descriptions) by tests/integration/contract.rs. Edit those, then rewrite this page with \
         `GPU_RUNNER_WRITE_DOCS=1 cargo test --test integration inputs_page`. -->\n\n\
         Lists take commas and/or newlines. Booleans are `true` or `false` (`True`, `TRUE`, \
         `False`, `FALSE` too). An empty value is the same as leaving an input out.\n\n\
         Every input problem is reported at once, each as an annotation that names the input, \
         shows the value (never a secret's) and says how to fix it, for example:\n\n\
         ```text\nError: Invalid input: instance-types: instance-types entry \"G5.XLarge\" is not an \
         EC2 instance type name (FAMILY.SIZE). Instance types are lowercase: write g5.xlarge.\n\
         ```\n\n\
         An input meant for another mode, or an input gpu-runner does not have (say \
         `instance_type`), gives a warning with the likely intended name.\n\n\
         Some names still say less than they mean: the `instance-id` output is the first \
         instance launched, and stop takes `instance-ids`; `labels` are extra labels for the \
         runner on EC2 but the labels to wait for with `machine: attached`; `region` (stop) is \
         start's `region` output, while `aws-region` is the region every mode works in; \
         `max-lifetime-minutes` (start) is how long an instance may live, `max-age-minutes` \
         (cleanup) how old one must be before cleanup ends it; the inputs of `machine: \
         kubernetes` have no prefix, and are listed together below.\n",
    );
    for (title, intro, member) in &sections {
        page.push_str(&format!(
            "\n## {title}\n\n{intro}\n\n| Input | Mode | Default | What it is |\n|---|---|---|---|\n"
        ));
        for s in spec::ALL.iter().filter(|s| member(s)) {
            page.push_str(&row(s));
        }
    }
    page.push_str(
        "\n## Renamed inputs\n\nThese old names work until the next major version, each with a \
         warning that names the new one; giving both names is an error.\n\n\
         | Old name | New name | Why |\n|---|---|---|\n",
    );
    for alias in aliases::ALIASES {
        page.push_str(&format!(
            "| `{}` | `{}` | {} |\n",
            alias.old, alias.new.name, alias.why
        ));
    }
    page.push_str("\n## Outputs\n\nSet by start.\n\n| Output | What it is |\n|---|---|\n");
    for name in OUTPUTS {
        page.push_str(&format!(
            "| `{name}` | {} |\n",
            link(&action.outputs[*name].description)
        ));
    }
    page
}

/// docs/inputs.md is what the spec and action.yml make, every input in exactly one section.
#[test]
fn inputs_page_is_generated_from_the_spec_and_action_yml() {
    let page = inputs_page();
    let inputs = page.split("\n## Outputs").next().unwrap();
    for s in spec::ALL {
        assert_eq!(
            inputs.matches(&format!("\n| `{}` |", s.name)).count(),
            1,
            "{} is not in exactly one section",
            s.name
        );
    }
    let path = format!("{}/docs/inputs.md", env!("CARGO_MANIFEST_DIR"));
    if std::env::var_os("GPU_RUNNER_WRITE_DOCS").is_some() {
        std::fs::write(&path, &page).unwrap();
    }
    assert!(
        read("docs/inputs.md") == page,
        "docs/inputs.md is not what src/inputs/spec.rs and action.yml make: rewrite it with \
         GPU_RUNNER_WRITE_DOCS=1 cargo test --test integration inputs_page"
    );
}

/// The README's short tables name inputs that exist, and every output.
#[test]
fn the_readme_names_real_inputs_and_every_output() {
    let inputs = readme_table("### Inputs most people set");
    assert!(inputs.len() >= 10, "{inputs:?}");
    let unknown: Vec<_> = inputs
        .iter()
        .filter(|i| spec::by_name(i).is_none())
        .collect();
    assert!(
        unknown.is_empty(),
        "the README names inputs that do not exist: {unknown:?}"
    );
    assert_eq!(readme_table("### Outputs"), OUTPUTS, "README outputs table");
}

/// action.yml's runner-version description (and so docs/inputs.md) lists every pinned version.
#[test]
fn the_inputs_reference_lists_every_pinned_runner_version() {
    let mut versions: Vec<&str> = Vec::new();
    for pin in gpu_runner::boot::PINNED_RUNNERS {
        if !versions.contains(&pin.version) {
            versions.push(pin.version);
        }
    }
    assert!(
        action().inputs["runner-version"]
            .description
            .ends_with(&format!(
                "Pinned, with their x64 and arm64 hashes: {}.",
                versions.join(", ")
            )),
        "action.yml's runner-version does not list {versions:?}"
    );
}

#[test]
fn every_workflow_example_in_the_readme_is_a_linted_file() {
    let readme = crate::support::user_docs();
    let files: Vec<String> =
        std::fs::read_dir(format!("{}/tests/workflows", env!("CARGO_MANIFEST_DIR")))
            .expect("tests/workflows")
            .map(|e| std::fs::read_to_string(e.expect("entry").path()).expect("read example"))
            .collect();
    let examples: Vec<&str> = readme
        .split("```yaml\n")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .filter(|block| block.contains("jobs:"))
        .collect();
    assert!(!examples.is_empty(), "the README shows a workflow");
    for example in examples {
        assert!(
            files.iter().any(|f| f == example),
            "this README example is not a file under tests/workflows/ (where .ci/run lints it):\n{example}"
        );
    }
}

/// The default pod image is one value in three places: the Kubernetes manifest Dependabot keeps
/// current (`src/machine/kubernetes/runner-image.yaml`), the parser's default and `action.yml`'s,
/// each named by digest.
#[test]
fn the_default_pod_image_is_one_digest_pinned_value_that_dependabot_can_see() {
    let manifest: serde_yaml::Value =
        serde_yaml::from_str(&read("src/machine/kubernetes/runner-image.yaml"))
            .expect("the manifest parses");
    let image = manifest["spec"]["containers"][0]["image"]
        .as_str()
        .expect("an image")
        .to_owned();
    assert!(image.contains("@sha256:"), "{image}");
    assert_eq!(image, gpu_runner::inputs::spec::DEFAULT_POD_IMAGE);
    let action: serde_yaml::Value =
        serde_yaml::from_str(&read("action.yml")).expect("action.yml parses");
    assert_eq!(
        action["inputs"]["pod-image"]["default"].as_str(),
        Some(image.as_str())
    );
    assert!(read(".github/dependabot.yml").contains("- /src/machine/kubernetes"));
}

/// Every relative link in the README, CONTRIBUTING.md and docs/*.md names a file that exists, and
/// its anchor (if any) a heading of that file, as GitHub makes anchors of headings.
#[test]
fn every_relative_link_and_anchor_in_the_docs_resolves() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut pages = vec![root.join("README.md"), root.join("CONTRIBUTING.md")];
    pages.extend(
        std::fs::read_dir(root.join("docs"))
            .expect("docs/")
            .map(|e| e.expect("an entry of docs/").path())
            .filter(|p| p.extension().is_some_and(|x| x == "md")),
    );
    let anchor = |heading: &str| {
        heading
            .trim_start_matches('#')
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == '-' || *c == ' ' || *c == '_')
            .map(|c| if c == ' ' { '-' } else { c })
            .collect::<String>()
    };
    let headings = |path: &std::path::Path| -> Vec<String> {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let mut fenced = false;
        text.lines()
            .filter(|l| {
                if l.starts_with("```") {
                    fenced = !fenced;
                }
                !fenced && l.starts_with('#')
            })
            .map(anchor)
            .collect()
    };
    let mut broken = Vec::new();
    for page in &pages {
        let text = std::fs::read_to_string(page).unwrap();
        let prose: String = text.split("```").step_by(2).collect::<Vec<_>>().join("");
        for link in prose.split("](").skip(1) {
            let Some(target) = link.split(')').next() else {
                continue;
            };
            if target.starts_with("http") || target.contains(' ') {
                continue;
            }
            let (path, fragment) = target.split_once('#').unwrap_or((target, ""));
            let file = if path.is_empty() {
                page.clone()
            } else {
                page.parent().unwrap().join(path)
            };
            if !file.exists() {
                broken.push(format!("{}: {target}", page.display()));
            } else if !fragment.is_empty()
                && file.extension().is_some_and(|x| x == "md")
                && !headings(&file).iter().any(|h| h == fragment)
            {
                broken.push(format!("{}: {target} (no such heading)", page.display()));
            }
        }
    }
    assert!(broken.is_empty(), "broken links: {broken:#?}");
    for file in ["LICENSE", "CONTRIBUTING.md", "SECURITY.md", "CHANGELOG.md"] {
        assert!(root.join(file).exists(), "{file} is missing");
    }
}

/// Every `prefix…` reference in `text`, up to the first character that cannot be part of a ref.
fn refs_after<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.split(prefix)
        .skip(1)
        .map(|rest| {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '-'))
                .unwrap_or(rest.len());
            rest[..end].trim_end_matches('.')
        })
        .collect()
}

/// One version everywhere a user meets it: the crate, action.yml's image, the `@vMAJOR` of every
/// example, the raw-file and release-download URLs of the docs, the attach image's tag and the
/// top entry of the changelog.
#[test]
fn one_version_everywhere_a_user_meets_it() {
    let version = env!("CARGO_PKG_VERSION");
    let major = version.split('.').next().unwrap();
    assert!(
        read("action.yml").contains(&format!(
            "image: docker://ghcr.io/gpu-runner/gpu-runner:{version}\n"
        )),
        "action.yml's image is not {version}"
    );
    let mut texts = vec![crate::support::user_docs(), read("CONTRIBUTING.md")];
    for entry in std::fs::read_dir(format!("{}/tests/workflows", env!("CARGO_MANIFEST_DIR")))
        .expect("tests/workflows")
    {
        texts.push(std::fs::read_to_string(entry.expect("entry").path()).expect("an example"));
    }
    let all = texts.join("\n");
    let uses = refs_after(&all, "uses: gpu-runner/gpu-runner@");
    assert!(uses.len() >= 10, "{uses:?}");
    assert!(
        uses.iter().all(|r| *r == format!("v{major}")),
        "examples must use gpu-runner/gpu-runner@v{major}: {uses:?}"
    );
    let raw = refs_after(&all, "raw.githubusercontent.com/gpu-runner/gpu-runner/");
    assert!(!raw.is_empty());
    assert!(
        raw.iter().all(|r| *r == format!("v{version}")),
        "raw URLs must name v{version}: {raw:?}"
    );
    let attach = refs_after(&all, "ghcr.io/gpu-runner/gpu-runner-attach:");
    assert!(!attach.is_empty());
    assert!(
        attach.iter().all(|r| *r == major || *r == version),
        "{attach:?}"
    );
    let downloads = refs_after(&all, "VERSION, SHA256 = \"");
    assert!(!downloads.is_empty());
    assert!(downloads.iter().all(|r| *r == version), "{downloads:?}");
    let changelog = read("CHANGELOG.md");
    let newest = changelog
        .lines()
        .find(|l| l.starts_with("## "))
        .expect("a version in CHANGELOG.md");
    assert!(
        newest.starts_with(&format!("## {version} ")) || newest == format!("## {version}"),
        "CHANGELOG.md's newest entry is {newest:?}, the crate is {version}"
    );
}

/// The Launch Stack link in docs/aws.md reads the object that the release workflow writes: the
/// same bucket, under the major version, the template file of this repository.
#[test]
fn the_launch_stack_link_reads_the_template_the_release_publishes() {
    let major = env!("CARGO_PKG_VERSION").split('.').next().unwrap();
    let workflow = read(".github/workflows/release.yml");
    let bucket = workflow
        .lines()
        .find_map(|l| l.trim().strip_prefix("TEMPLATE_BUCKET: "))
        .expect("the release workflow names the template bucket");
    assert!(workflow.contains(
        "for key in \"v$VERSION\" \"v$MAJOR\"; do\n            aws s3 cp docs/cloudformation/gpu-runner.yaml \"s3://$TEMPLATE_BUCKET/$key/gpu-runner.yaml\""
    ));
    let link = format!(
        "(https://console.aws.amazon.com/cloudformation/home#/stacks/quickcreate?templateURL=https://{bucket}.s3.amazonaws.com/v{major}/gpu-runner.yaml&stackName=gpu-runner)"
    );
    assert!(
        read("docs/aws.md").contains(&format!("**[Launch Stack]{link}**")),
        "docs/aws.md has no Launch Stack link {link}"
    );
}

/// Every annotation title gpu-runner prints (read from its source: `.title("…")`, attach's
/// `problem("…")`, the errors' `one("…")` and `title: "…"`) has a section of its own in
/// docs/troubleshooting.md, at the anchor its errors link to; so do the families of titles that
/// name an input or a call.
#[test]
fn every_annotation_title_has_a_troubleshooting_section() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut titles = std::collections::BTreeSet::new();
    let mut dirs = vec![root.join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|x| x != "rs") || path.ends_with("tests.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap();
            for opener in [".title(", "problem(", " one(", "title: "] {
                for rest in code.split(opener).skip(1) {
                    let rest = rest.trim_start();
                    if let Some(literal) = rest.strip_prefix('"') {
                        let title = literal.split('"').next().unwrap();
                        if !title.contains('{') {
                            titles.insert(title.to_owned());
                        }
                    }
                }
            }
        }
    }
    assert!(titles.len() >= 40, "{titles:?}");
    titles.extend(
        [
            "Missing input",
            "Invalid input",
            "A cloud or cluster call failed",
            "GitHub: a call failed",
        ]
        .map(str::to_owned),
    );
    let page = read("docs/troubleshooting.md");
    let anchors: Vec<String> = page
        .lines()
        .filter(|l| l.starts_with("### "))
        .map(|l| gpu_runner::modes::failure::anchor(&l[4..]))
        .collect();
    let missing: Vec<&String> = titles
        .iter()
        .filter(|t| !anchors.contains(&gpu_runner::modes::failure::anchor(t)))
        .collect();
    assert!(
        missing.is_empty(),
        "titles without a section in docs/troubleshooting.md: {missing:?}"
    );
    // The scripts that run on the machine link to sections of the page too.
    for script in ["src/machine/kubernetes/container-hook.sh"] {
        let text = read(script);
        let links: Vec<&str> = text
            .split("troubleshooting.md#")
            .skip(1)
            .map(|rest| {
                rest.split(|c: char| c == '"' || c.is_whitespace())
                    .next()
                    .unwrap()
            })
            .collect();
        assert!(!links.is_empty(), "{script} links to no section");
        for link in links {
            assert!(
                anchors.iter().any(|a| a == link),
                "{script}: no section #{link}"
            );
        }
    }
    // The links the errors carry point at this page of this major version.
    assert_eq!(
        gpu_runner::modes::failure::help_url("no-gpu-capacity"),
        format!(
            "https://github.com/gpu-runner/gpu-runner/blob/v{}/docs/troubleshooting.md#no-gpu-capacity",
            env!("CARGO_PKG_VERSION_MAJOR")
        )
    );
}

/// The README's picture (docs/images/job-summary.svg, drawn from a real demo run by
/// `cargo run -p world -- demo --picture docs/images/job-summary.svg`) shows the summary a start
/// writes today: the heading and every row of the start story's snapshot, which the story holds
/// to the binary. A summary that gains or renames a row fails here until the picture is redrawn.
#[test]
fn the_readme_picture_shows_todays_start_summary() {
    let snapshot = read("tests/integration/snapshots/start.snap");
    let summary = snapshot
        .split("── job summary ──\n")
        .nth(1)
        .expect("the start story's summary");
    let svg = read("docs/images/job-summary.svg");
    let mut shown = 0;
    for line in summary.lines().take_while(|l| !l.starts_with("──")) {
        let words = if let Some(heading) = line.strip_prefix("### ") {
            heading.to_owned()
        } else if line.starts_with("| ") && !line.starts_with("| ---") {
            line.split('|').nth(1).unwrap().trim().to_owned()
        } else {
            continue;
        };
        if words.is_empty() {
            continue;
        }
        let text = world::picture::escape(&words);
        assert!(
            svg.contains(&format!(">{text}</text>")),
            "docs/images/job-summary.svg lacks {words:?}: redraw it with \
             cargo run -p world -- demo --picture docs/images/job-summary.svg"
        );
        shown += 1;
    }
    assert!(shown >= 10, "{shown} rows");
}
