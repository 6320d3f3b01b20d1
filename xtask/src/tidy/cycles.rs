//! Rule: no module cycle.
//!
//! For each library crate, the top-level modules (those `src/lib.rs`
//! declares) form a graph: A → B when code inside A names B through
//! `crate::B…`, `super::…` or `self::…` paths (in `use` or anywhere in code,
//! test modules included; `super::` is resolved from the file's module path
//! and its inline `mod x { … }` blocks). A name the crate root re-exports
//! (`pub use store::Store;` in `lib.rs`, then `crate::Store`) counts as its
//! module. The binary (`main.rs`, `bin/`) may depend on anything and is left
//! out; so is the crate root itself, and so are test-only modules
//! (`#[cfg(test)] mod testkit;`): harnesses that, like the binary, may use
//! anything. Test code inside the other modules counts. The graph has no
//! cycle.
//!
//! The same holds one level down, between the sibling modules of a few
//! folder modules ([`SECOND_LEVEL`]): the parent's own `mod.rs` is not a
//! node, so a parent re-exporting its children and a child using items of its
//! parent is no cycle; a child naming a sibling through the parent's
//! re-export (`super::Store`, re-exported from `handle`) counts as naming the
//! sibling.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::lexer::{Kind, Token, tokenize};
use super::{Problems, rel, rust_files};

/// The library crates whose top-level modules are checked.
pub const CRATES: &[&str] = &[
    "edge-node",
    "cloud-sync",
    "cloud-sync/client",
    "domain",
    "firmware-config",
    "web",
];

/// Folder modules whose children are checked for cycles between siblings.
pub const SECOND_LEVEL: &[(&str, &str)] = &[
    ("edge-node", "store"),
    ("edge-node", "integration"),
    ("edge-node", "sync"),
    ("edge-node", "inference"),
    ("cloud-sync", "store"),
    ("cloud-sync", "http"),
];

/// Stop enumerating cycles of one graph after this many.
const MAX_CYCLES: usize = 200;

/// A path to a module item found in code.
#[derive(Debug, Clone)]
pub struct Ref {
    /// The module path of the code that names it (inline modules included).
    pub from: Vec<String>,
    /// The absolute path named, each segment with its line.
    pub path: Vec<(String, usize)>,
    /// How the path starts as written (`crate`, `super::super`, `self`, or
    /// empty for a bare `use` path).
    pub written: String,
    /// How many segments of `path` the written start stands for.
    pub base_len: usize,
    /// `as` alias, for `use` leaves.
    pub alias: Option<String>,
    /// Whether it is a top-level `use` item of its file (not in an inline
    /// module, not in a function): a re-export candidate.
    pub top_use: bool,
}

impl Ref {
    /// The path as written, up to and including segment `upto`.
    fn shown(&self, upto: usize) -> String {
        let mut s = self.written.clone();
        for (seg, _) in self.path.iter().take(upto + 1).skip(self.base_len) {
            if !s.is_empty() {
                s.push_str("::");
            }
            s.push_str(seg);
        }
        s
    }
}

/// The module path of a file, from its path relative to `src/`; `None` for
/// the binary's files.
pub fn file_module(src_rel: &str) -> Option<Vec<String>> {
    if src_rel == "main.rs" || src_rel.starts_with("bin/") {
        return None;
    }
    if src_rel == "lib.rs" {
        return Some(vec![]);
    }
    let mut parts: Vec<String> = src_rel
        .trim_end_matches(".rs")
        .split('/')
        .map(str::to_owned)
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    Some(parts)
}

struct Parser<'a> {
    tokens: &'a [Token],
    out: Vec<Ref>,
}

impl Parser<'_> {
    /// Parses a path (tree) from token `j` with `prefix` already resolved;
    /// pushes its leaves; returns the index after it.
    fn tree(&mut self, mut j: usize, mut prefix: Vec<(String, usize)>, proto: &Ref) -> usize {
        let t = self.tokens;
        loop {
            match t.get(j).map(|x| &x.kind) {
                Some(Kind::Ident(seg)) if seg != "as" => {
                    if seg != "self" {
                        prefix.push((seg.clone(), t[j].line));
                    }
                    j += 1;
                    if t.get(j).is_some_and(Token::is_path_sep) {
                        j += 1;
                        continue;
                    }
                    break;
                }
                Some(Kind::Punct('{')) => {
                    j += 1;
                    while j < t.len() && !t[j].is_punct('}') {
                        let before = j;
                        j = self.tree(j, prefix.clone(), proto);
                        // Skip to the next item, whatever remains of this one.
                        let mut depth = 0usize;
                        while let Some(x) = t.get(j) {
                            match x.kind {
                                Kind::Punct('{') => depth += 1,
                                Kind::Punct('}') if depth == 0 => break,
                                Kind::Punct('}') => depth -= 1,
                                Kind::Punct(',') if depth == 0 => {
                                    j += 1;
                                    break;
                                }
                                _ => {}
                            }
                            j += 1;
                        }
                        if j == before {
                            j += 1;
                        }
                    }
                    return j + 1;
                }
                _ => break,
            }
        }
        let alias = match (t.get(j), t.get(j + 1)) {
            (Some(a), Some(name)) if a.is_ident("as") => name.ident().map(str::to_owned),
            _ => None,
        };
        self.out.push(Ref {
            path: prefix,
            alias,
            ..proto.clone()
        });
        j
    }
}

/// Every `crate::`, `super::` and `self::` path in a source text (and the
/// bare paths of its top-level `use` items), for a file whose module path is
/// `module`.
pub fn refs(src: &str, module: &[String]) -> Vec<Ref> {
    let tokens = tokenize(src);
    let t = &tokens[..];
    let mut p = Parser {
        tokens: t,
        out: vec![],
    };
    let mut depth = 0usize;
    // Inline modules: name and the brace depth inside them.
    let mut inline: Vec<(String, usize)> = vec![];
    for i in 0..t.len() {
        match &t[i].kind {
            Kind::Punct('{') => {
                depth += 1;
                if i >= 2
                    && t[i - 2].is_ident("mod")
                    && let Some(name) = t[i - 1].ident()
                {
                    inline.push((name.to_owned(), depth));
                }
            }
            Kind::Punct('}') => {
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
            }
            Kind::Ident(word) => {
                let prev = i.checked_sub(1).map(|k| &t[k]);
                if prev.is_some_and(|x| x.is_path_sep() || x.is_punct('$')) {
                    continue;
                }
                let mut from = module.to_vec();
                from.extend(inline.iter().map(|(n, _)| n.clone()));
                let line = t[i].line;
                let is_use = prev.is_some_and(|x| x.is_ident("use"));
                let top_use = is_use && inline.is_empty() && depth == 0;
                let sep_follows = t.get(i + 1).is_some_and(Token::is_path_sep);
                let (base, written, j): (Vec<String>, String, usize) = match word.as_str() {
                    "crate" if sep_follows => (vec![], "crate".into(), i + 2),
                    "self" if sep_follows => (from.clone(), "self".into(), i + 2),
                    "super" if sep_follows => {
                        let mut base = from.clone();
                        let mut j = i;
                        let mut written = vec![];
                        while t.get(j).is_some_and(|x| x.is_ident("super"))
                            && t.get(j + 1).is_some_and(Token::is_path_sep)
                        {
                            base.pop();
                            written.push("super");
                            j += 2;
                        }
                        (base, written.join("::"), j)
                    }
                    // A bare path in a top-level `use`: relative to the file's
                    // module (a child module, or an extern crate).
                    _ if top_use => (from.clone(), String::new(), i),
                    _ => continue,
                };
                let proto = Ref {
                    from: from.clone(),
                    path: vec![],
                    written,
                    base_len: base.len(),
                    alias: None,
                    top_use,
                };
                let prefix = base.into_iter().map(|s| (s, line)).collect();
                p.tree(j, prefix, &proto);
            }
            _ => {}
        }
    }
    p.out
}

/// The modules a module file declares (`mod x;`, `mod x { … }`), each
/// with whether it is test-only (`#[cfg(test)]`).
fn declared_mods(src: &str) -> BTreeMap<String, bool> {
    let t = tokenize(src);
    let mut out = BTreeMap::new();
    let mut depth = 0usize;
    let mut test_only = false;
    let mut i = 0;
    while i < t.len() {
        if t[i].is_punct('{') {
            depth += 1;
        } else if t[i].is_punct('}') {
            depth = depth.saturating_sub(1);
            test_only = false;
        } else if depth == 0 && t[i].is_punct(';') {
            test_only = false;
        } else if depth == 0 && t[i].is_punct('#') && t.get(i + 1).is_some_and(|x| x.is_punct('['))
        {
            // An outer attribute: `#[cfg(test)]` (or `cfg(all(test, …))`).
            let mut k = i + 2;
            let mut nesting = 1;
            let cfg = t.get(k).is_some_and(|x| x.is_ident("cfg"));
            let mut names_test = false;
            let mut negated = false;
            while k < t.len() && nesting > 0 {
                match &t[k].kind {
                    Kind::Punct('[') => nesting += 1,
                    Kind::Punct(']') => nesting -= 1,
                    Kind::Ident(w) if w == "test" => names_test = true,
                    Kind::Ident(w) if w == "not" || w == "any" => negated = true,
                    _ => {}
                }
                k += 1;
            }
            test_only |= cfg && names_test && !negated;
            i = k;
            continue;
        } else if depth == 0
            && t[i].is_ident("mod")
            && let Some(name) = t.get(i + 1).and_then(Token::ident)
            && t.get(i + 2)
                .is_some_and(|x| x.is_punct(';') || x.is_punct('{'))
        {
            out.insert(name.to_owned(), test_only);
        }
        i += 1;
    }
    out
}

/// One source file of a crate.
struct Source {
    /// Its path relative to the workspace root.
    rel: String,
    /// Its module path.
    module: Vec<String>,
    /// The paths it names.
    refs: Vec<Ref>,
    /// The modules it declares (inline ones included), and whether each is
    /// test-only.
    declared: BTreeMap<String, bool>,
}

/// Where an edge comes from: file (relative to the workspace root), line, and
/// the path as written.
pub type Place = (String, usize, String);

/// A graph of sibling modules with, for each edge, where it comes from.
#[derive(Debug, Default)]
pub struct Graph {
    /// Edge (from, to) → each place that makes it.
    pub edges: BTreeMap<(String, String), Vec<Place>>,
}

impl Graph {
    fn adjacency(&self) -> BTreeMap<&str, Vec<&str>> {
        let mut adj: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (a, b) in self.edges.keys() {
            adj.entry(a).or_default().push(b);
        }
        adj
    }

    /// The elementary cycles, each starting at its smallest node, in order
    /// (at most [`MAX_CYCLES`]).
    pub fn cycles(&self) -> Vec<Vec<String>> {
        let adj = self.adjacency();
        let mut out = vec![];
        for &start in adj.keys() {
            let mut path = vec![start];
            dfs(&adj, start, &mut path, &mut out);
            if out.len() >= MAX_CYCLES {
                break;
            }
        }
        out
    }
}

fn dfs<'a>(
    adj: &BTreeMap<&'a str, Vec<&'a str>>,
    start: &'a str,
    path: &mut Vec<&'a str>,
    out: &mut Vec<Vec<String>>,
) {
    let Some(&last) = path.last() else {
        return;
    };
    for &next in adj.get(last).into_iter().flatten() {
        if out.len() >= MAX_CYCLES {
            return;
        }
        if next == start {
            out.push(path.iter().map(|s| (*s).to_owned()).collect());
        } else if next > start && !path.contains(&next) {
            path.push(next);
            dfs(adj, start, path, out);
            path.pop();
        }
    }
}

/// The graph between the children of module `parent` (`[]`: the crate's
/// top-level modules).
fn graph(sources: &[Source], parent: &[String]) -> Graph {
    let depth = parent.len();
    let parent_file = sources.iter().find(|s| s.module == parent);
    // Children: declared by the parent's file, or on disk below it.
    let mut children: BTreeSet<String> = sources
        .iter()
        .filter(|s| s.module.len() > depth && s.module.starts_with(parent))
        .map(|s| s.module[depth].clone())
        .collect();
    // Test-only children (`#[cfg(test)] mod testkit;`) are harnesses: like
    // the binary, they may use anything and nothing counts as using them.
    let mut harness = BTreeSet::new();
    if let Some(pf) = parent_file {
        for (name, test_only) in &pf.declared {
            children.insert(name.clone());
            if *test_only {
                harness.insert(name.clone());
            }
        }
    }
    children.retain(|c| !harness.contains(c));
    // Re-exports of the parent: a name it `use`s from one of its children.
    let mut reexports: BTreeMap<String, String> = BTreeMap::new();
    if let Some(pf) = parent_file {
        for r in pf.refs.iter().filter(|r| r.top_use && r.from == parent) {
            if r.path.len() > depth + 1
                && r.path.iter().map(|(s, _)| s).take(depth).eq(parent.iter())
                && children.contains(&r.path[depth].0)
                && let Some((last, _)) = r.path.last()
            {
                let name = r.alias.clone().unwrap_or_else(|| last.clone());
                reexports.insert(name, r.path[depth].0.clone());
            }
        }
    }
    let mut g = Graph::default();
    for s in sources {
        for r in &s.refs {
            if r.from.len() <= depth || !r.from.starts_with(parent) {
                continue;
            }
            let from = &r.from[depth];
            if harness.contains(from) {
                continue;
            }
            if r.path.len() <= depth || !r.path.iter().map(|(s, _)| s).take(depth).eq(parent.iter())
            {
                continue;
            }
            let (seg, line) = &r.path[depth];
            let (to, shown) = if children.contains(seg) {
                (seg.clone(), r.shown(depth))
            } else if let Some(child) = reexports.get(seg) {
                (
                    child.clone(),
                    format!("{} (re-exported from {child})", r.shown(depth)),
                )
            } else {
                continue;
            };
            if &to != from {
                g.edges
                    .entry((from.clone(), to))
                    .or_default()
                    .push((s.rel.clone(), *line, shown));
            }
        }
    }
    for places in g.edges.values_mut() {
        places.sort();
        places.dedup();
    }
    g
}

/// The problems of one graph: a line per cycle.
fn report(g: &Graph, label: &str, problems: &mut Problems) {
    let cycles = g.cycles();
    for cycle in &cycles {
        let mut names = cycle.clone();
        names.push(cycle[0].clone());
        let mut because = vec![];
        for pair in names.windows(2) {
            let places = &g.edges[&(pair[0].clone(), pair[1].clone())];
            let (path, line, shown) = &places[0];
            let more = if places.len() > 1 {
                format!(" (+{} more)", places.len() - 1)
            } else {
                String::new()
            };
            because.push(format!("{path}:{line} uses {shown}{more}"));
        }
        let (path, line, _) = &g.edges[&(names[0].clone(), names[1].clone())][0];
        problems.push(format!(
            "{path}:{line}: module cycle in {label}: {} ({})",
            names.join(" → "),
            because.join("; ")
        ));
    }
    if cycles.len() >= MAX_CYCLES {
        problems.push(format!(
            "{label}: more than {MAX_CYCLES} module cycles; only the first are listed"
        ));
    }
}

fn sources(root: &Path, krate: &str) -> anyhow::Result<Vec<Source>> {
    let src: PathBuf = root.join(krate).join("src");
    let mut files = vec![];
    rust_files(&src, &mut files);
    files.sort();
    let mut out = vec![];
    for f in files {
        let in_src = rel(&src, &f);
        let Some(module) = file_module(&in_src) else {
            continue;
        };
        let text = std::fs::read_to_string(&f)?;
        out.push(Source {
            rel: rel(root, &f),
            refs: refs(&text, &module),
            declared: declared_mods(&text),
            module,
        });
    }
    Ok(out)
}

/// The graphs this rule checks for one crate: the top level, then the
/// second-level folders listed for it.
pub fn graphs(root: &Path, krate: &str) -> anyhow::Result<Vec<(String, Graph)>> {
    let sources = sources(root, krate)?;
    let mut out = vec![(krate.to_owned(), graph(&sources, &[]))];
    for (k, folder) in SECOND_LEVEL {
        if *k == krate
            && sources
                .iter()
                .any(|s| s.module.first() == Some(&(*folder).to_owned()))
        {
            let parent = vec![(*folder).to_owned()];
            out.push((format!("{krate} {folder}/"), graph(&sources, &parent)));
        }
    }
    Ok(out)
}

/// Every module cycle.
pub fn check(root: &Path, problems: &mut Problems) -> anyhow::Result<()> {
    for krate in CRATES {
        if !root.join(krate).join("src").is_dir() {
            continue;
        }
        for (label, g) in graphs(root, krate)? {
            report(&g, &label, problems);
        }
    }
    Ok(())
}
