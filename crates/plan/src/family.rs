//! Family-aware planning: the `shared` strategy told which other closures
//! (the other images of a project, or the package sets an infrastructure
//! offers) an image will sit next to.
//!
//! Rules that look at one image at a time cannot know which of its paths
//! another image has too, so at a tight budget the larger image groups paths
//! that the smaller ones keep apart (E 0.95 on the corpus at 48 layers). A
//! [`Family`] says it:
//!
//! 1. **Signatures.** The universe U is the image's paths and every member's.
//!    A path's signature is the set of members whose closure holds it; the
//!    paths of no member (the application) have the empty one. Paths of one
//!    signature are all present or all absent in any image that is a union of
//!    members, so a layer made of one signature class is identical in every
//!    such image. Each signature class is split further by **volatility**:
//!    which often-updated libraries (the catalogue's [`History`], or before
//!    any, [`crate::catalogue::PRIOR`]) a path is or depends on. An update of
//!    such a library changes exactly the paths that depend on it, so it then
//!    touches whole classes only and re-sends little more than what changed.
//! 2. **Each class by the intrinsic rules** of [`crate::shared`] (big paths
//!    alone, small ones by anchor), over all of the class's paths in U, with
//!    a share of the budget and a singleton threshold (a rung of the same
//!    ladder) chosen per class. An image keeps the layers of the classes it
//!    holds (a partly held class, which only an image that is not a union of
//!    members has, keeps its layers' held paths).
//! 3. **Shares and thresholds from the family alone.** `budget - top_layers`
//!    layers go to the member classes (every signature but the empty one),
//!    at least one each, choosing each class's share and rung to minimise
//!    the bytes an update would re-send needlessly (see `needless_bytes`:
//!    every path may be updated, each as likely, an update changing it and
//!    all that depends on it; and each volatile library's update as a whole,
//!    weighted by how volatile it is), summed over the classes; exact, by
//!    dynamic programming. This depends only on the members and the history, never on the image, so
//!    every image planned with the same family gets the same split. If there
//!    are more classes than layers, classes are merged in pairs (see
//!    `merge_by_cost`: first what stores nothing twice, then what re-sends
//!    least), then single classes move between the merged ones while that
//!    lowers the cost (`improve`); where layers are scarce, a few further
//!    merges are tried, to leave layers for splitting the big stable classes.
//!    Volatile updates start light; a library whose update would still
//!    re-send more than 1.1× what it changes weighs more, round by round,
//!    and the split that misses that target least is kept.
//!
//!    Last, paths move between the layers of all member classes while that
//!    lowers the same cost and stores nothing more (see `refine`): the
//!    intrinsic rules group by anchor, not by what an update re-sends.
//!
//!    Two rules keep the classes few: a volatile library that more than
//!    10/11 of the family's bytes depend on (glibc) makes none (its update
//!    re-sends at most 1.1× in any layering), and what one member alone
//!    holds, if tiny (its own root), goes on top of its images, and so does
//!    a member's sole root (its env) if tiny, whatever else that member
//!    holds alone.
//! 4. **Order.** Classes held by more members first (they change least and
//!    are most widely shared), then by signature; within a class by closure
//!    size as in `shared`. The empty class goes on top with every layer the
//!    image has left (at least `top_layers`).
//!
//! With an empty family this is exactly [`plan_shared`]. Everything depends
//! only on the path sets, never on input or hash-map order.

use std::collections::{BTreeMap, BTreeSet};

use nix_layer_graph::{Graph, PathInfo};
use nix_layer_store::StorePath;

use crate::bits::BitMatrix;
use crate::catalogue::History;
use crate::shared::{plan_shared, Context, SharedOptions};
use crate::{order_by_closure_size, Error, Plan};

/// The closures an image is planned next to. Members are kept sorted by
/// name (then by paths), so their order in [`Family::new`] does not matter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Family {
    members: Vec<(String, BTreeSet<StorePath>)>,
    /// Every member path's info (references and NAR size), by path.
    infos: BTreeMap<StorePath, PathInfo>,
    top_layers: usize,
    history: History,
}

impl Family {
    /// A family of named closures, e.g. `[("base", g1), ("python", g2)]`.
    pub fn new(members: Vec<(String, Graph)>) -> Family {
        let mut infos = BTreeMap::new();
        let mut sets: Vec<(String, BTreeSet<StorePath>)> = Vec::with_capacity(members.len());
        for (name, graph) in &members {
            sets.push((name.clone(), graph.infos().iter().map(|i| i.path.clone()).collect()));
        }
        sets.sort();
        // A store path's info is the same in every closure; should two
        // members disagree, the first in sorted order wins.
        let mut graphs: Vec<&(String, Graph)> = members.iter().collect();
        graphs.sort_by(|a, b| {
            let paths = |g: &Graph| g.infos().iter().map(|i| i.path.clone()).collect::<BTreeSet<_>>();
            (&a.0, paths(&a.1)).cmp(&(&b.0, paths(&b.1)))
        });
        for (_, g) in graphs {
            for info in g.infos() {
                infos.entry(info.path.clone()).or_insert_with(|| info.clone());
            }
        }
        Family { members: sets, infos, top_layers: 1, history: History::default() }
    }

    /// Keeps at least `n >= 1` layers for the paths of no member (default 1).
    pub fn with_top_layers(mut self, n: usize) -> Family {
        self.top_layers = n.max(1);
        self
    }

    /// The update history of the family's catalogue: which packages'
    /// dependents to keep apart (see [`crate::catalogue`]). Without one,
    /// the [`crate::catalogue::PRIOR`] decides.
    pub fn with_history(mut self, history: History) -> Family {
        self.history = history;
        self
    }

    pub fn history(&self) -> &History {
        &self.history
    }

    pub fn top_layers(&self) -> usize {
        self.top_layers
    }

    /// The members' names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.members.iter().map(|(n, _)| n.as_str())
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Whether member `name`'s closure holds `path`.
    pub fn contains(&self, name: &str, path: &StorePath) -> bool {
        self.members.iter().any(|(n, s)| n == name && s.contains(path))
    }
}

/// A class's layers and singleton threshold, as [`allocate`] chooses them.
type Share = (usize, u128);

/// One signature class: the U indices of its paths, ascending.
#[derive(Clone)]
struct Class {
    /// Member indices holding its paths; `None` for merged classes.
    signature: Option<Vec<usize>>,
    /// The volatile libraries its paths depend on (merged classes: the union).
    volatile: Vec<usize>,
    paths: Vec<usize>,
    bytes: u128,
}

type ClassOrder<'a> = (std::cmp::Reverse<usize>, &'a [usize]);

impl Class {
    fn new(
        universe: &Graph,
        signature: Option<Vec<usize>>,
        volatile: Vec<usize>,
        paths: Vec<usize>,
    ) -> Class {
        let bytes = paths.iter().map(|&i| universe.info(i).nar_size as u128).sum();
        Class { signature, volatile, paths, bytes }
    }

    /// Widest member signatures first, then by signature; merged classes
    /// last; then by volatility signature, stable paths first.
    fn key(&self) -> (Option<ClassOrder<'_>>, &[usize]) {
        (self.signature.as_deref().map(|s| (std::cmp::Reverse(s.len()), s)), &self.volatile)
    }
}

/// Which paths change often: those whose package the catalogue's history
/// (or, before any, the prior) calls volatile, by library. Only member
/// paths count, so this depends on the family, never on the image.
struct Volatility {
    /// Each volatile library's score and paths (ascending); libraries by
    /// name.
    libraries: Vec<(u64, Vec<usize>)>,
}

/// A volatile library's update weighs, per point of its score
/// ([`History::volatility`]) and per unit of re-send ratio, 1/VOLATILE_SHARE
/// times all other updates together before any boost (see [`BOOST_ROUNDS`]).
const VOLATILE_SHARE: u128 = 1024;

/// How often the split is made again, each time with the libraries that
/// would re-send too much weighing [`BOOST`] times more (at most
/// BOOST^BOOST_ROUNDS in all).
const BOOST_ROUNDS: usize = 10;
const BOOST: u128 = 4;

/// A volatile library's update re-sends at most this much of what it
/// changes (11/10) in the family's layers, where the boosts can get it.
const RESEND_TARGET: (u128, u128) = (11, 10);

/// A member's paths that no other member holds go on top when they weigh
/// less than 1/TINY_ALONE of the family's bytes.
const TINY_ALONE: u128 = 1000;

/// A volatile library is left out when what it changes (itself and its
/// dependents) times 11/10 reaches all of the family's bytes: in any
/// layering its update re-sends at most 1.1× what it changed.
const ALMOST_ALL: (u128, u128) = (11, 10);

impl Volatility {
    fn new(universe: &Graph, desc: &BitMatrix, member: &[bool], history: &History) -> Volatility {
        let mut libraries: BTreeMap<String, (u64, Vec<usize>)> = BTreeMap::new();
        for i in (0..universe.len()).filter(|&i| member[i]) {
            if let Some((library, score)) = history.volatility(universe.info(i).path.name()) {
                let e = libraries.entry(library).or_insert((0, Vec::new()));
                e.0 = e.0.max(score);
                e.1.push(i);
            }
        }
        // A library nearly everything depends on (glibc) is left out (see
        // ALMOST_ALL): its cone is not worth a layer.
        let bytes = |i: usize| if member[i] { universe.info(i).nar_size as u128 } else { 0 };
        let total: u128 = (0..universe.len()).map(bytes).sum();
        let libraries = libraries
            .into_values()
            .filter(|(_, paths)| {
                let hit = |i: usize| paths.iter().any(|&v| v == i || desc.get(i, v));
                let cone: u128 = (0..universe.len()).filter(|&i| hit(i)).map(bytes).sum();
                cone * ALMOST_ALL.0 < total * ALMOST_ALL.1
            })
            .collect();
        Volatility { libraries }
    }

    /// The volatile libraries (indices) that path `i` is part of or
    /// depends on: the updates that change it.
    fn signature(&self, desc: &BitMatrix, i: usize) -> Vec<usize> {
        let hit = |paths: &Vec<usize>| paths.iter().any(|&v| v == i || desc.get(i, v));
        (0..self.libraries.len()).filter(|&l| hit(&self.libraries[l].1)).collect()
    }
}

/// Bytes stored and needless update bytes, compared in that order.
type Cost = (u128, u128);

/// What merging classes costs, for [`merge_by_cost`].
struct MergeCosts<'a> {
    universe: &'a Graph,
    desc: &'a BitMatrix,
    weights: &'a Weights,
    /// Each U path's member signature (empty for the image's own paths).
    signature_of: &'a [Vec<usize>],
    /// Who may hold a layer: each member, and each union of two members
    /// (an image of base + one set), as member lists.
    holders: &'a [Vec<usize>],
}

impl MergeCosts<'_> {
    /// What a layer of `paths` costs in the family: the bytes stored (each
    /// holder has the part of it in its closure; equal parts are one layer)
    /// and the [`needless_bytes`] of updates summed over the holders.
    fn of(&self, paths: &[usize], scratch: &mut [u64]) -> Cost {
        let (of, parts) = self.holder_parts(paths);
        let mut count = vec![0u128; parts.len() + 1];
        of.iter().for_each(|&id| count[id] += 1);
        let stored = parts.iter().flatten().map(|&i| self.universe.info(i).nar_size as u128).sum();
        let needless = parts.iter().zip(&count[1..]).fold(0u128, |t, (part, &n)| {
            let one =
                needless_bytes(self.universe, self.desc, self.weights, std::slice::from_ref(part), scratch);
            t.saturating_add(one.saturating_mul(n))
        });
        (stored, needless)
    }

    /// The part of `paths` each holder has, as ids (0: none; equal parts,
    /// equal ids, numbered in holder order), and the parts by id - 1. A
    /// holder has the paths whose member signature meets it, so the parts
    /// follow from the few signatures `paths` have.
    fn holder_parts(&self, paths: &[usize]) -> (Vec<usize>, Vec<Vec<usize>>) {
        let sig = |i: usize| self.signature_of[i].as_slice();
        let mut sigs: Vec<&[usize]> = paths.iter().map(|&i| sig(i)).collect();
        sigs.sort_unstable();
        sigs.dedup();
        let sig_of: Vec<usize> =
            paths.iter().map(|&i| sigs.binary_search(&sig(i)).expect("collected")).collect();
        let mut ids: BTreeMap<Vec<bool>, usize> = BTreeMap::new();
        let mut parts: Vec<Vec<usize>> = Vec::new();
        let mut of = Vec::with_capacity(self.holders.len());
        for h in self.holders {
            let meets: Vec<bool> = sigs.iter().map(|s| h.iter().any(|m| s.contains(m))).collect();
            if !meets.contains(&true) {
                of.push(0);
                continue;
            }
            let id = *ids.entry(meets).or_insert_with_key(|meets| {
                parts.push(paths.iter().zip(&sig_of).filter(|&(_, &k)| meets[k]).map(|(&i, _)| i).collect());
                parts.len()
            });
            of.push(id);
        }
        (of, parts)
    }

    /// Which part of `paths` each holder has, as ids (see `holder_parts`),
    /// and each id's bytes.
    fn variants(&self, paths: &[usize]) -> Variants {
        let (of, parts) = self.holder_parts(paths);
        let bytes = std::iter::once(0)
            .chain(parts.iter().map(|p| p.iter().map(|&i| self.universe.info(i).nar_size as u128).sum()))
            .collect();
        Variants { of, bytes }
    }
}

/// Each of `n` members alone, then each union of two: a merge that no
/// member stores twice may still give two images built on different sets
/// different layers, so the unions count as holders too.
fn holders(n: usize) -> Vec<Vec<usize>> {
    let pairs = (0..n).flat_map(|a| (a + 1..n).map(move |b| vec![a, b]));
    (0..n).map(|m| vec![m]).chain(pairs).collect()
}

/// See [`MergeCosts::variants`].
struct Variants {
    of: Vec<usize>,
    bytes: Vec<u128>,
}

impl Variants {
    /// The bytes the family stores for the two classes merged.
    fn stored_merged(&self, other: &Variants) -> u128 {
        // Each distinct pair of parts is one layer.
        let width = other.bytes.len();
        let mut seen = vec![false; self.bytes.len() * width];
        let mut stored = 0;
        for (&a, &b) in self.of.iter().zip(&other.of) {
            if !std::mem::replace(&mut seen[a * width + b], true) {
                stored += self.bytes[a] + other.bytes[b];
            }
        }
        stored
    }
}

/// Merges classes until `room` layers fit them, and past that while a
/// merge costs nothing, one pair at a time: the
/// pair whose merged layer stores the fewest extra bytes in the family,
/// counting each member and each union of two (none when both have the
/// same member signature, or no such holder has only one), then adds the
/// least needless update bytes (ties: the first pair in class order). A
/// function of the family only.
fn merge_by_cost(costs: &MergeCosts, mut classes: Vec<Class>, room: usize) -> (Vec<Class>, u128) {
    let mut scratch = vec![0u64; costs.desc.words()];
    let mut alone: Vec<Cost> = classes.iter().map(|c| costs.of(&c.paths, &mut scratch)).collect();
    let merged = |classes: &[Class], a: usize, b: usize| {
        let mut paths = [&classes[a].paths[..], &classes[b].paths[..]].concat();
        paths.sort_unstable();
        paths
    };
    // pairs[b][a] for a < b: the bytes merging stores in addition, and,
    // evaluated only for the pairs that store the least, the needless
    // update bytes it adds and the merged cost. Only the pairs of a merged
    // class are evaluated again.
    type Pair = (u128, Option<(u128, Cost)>);
    let mut variants: Vec<Variants> = classes.iter().map(|c| costs.variants(&c.paths)).collect();
    let stored_pair = |variants: &[Variants], alone: &[Cost], a: usize, b: usize| -> Pair {
        let together = variants[a].stored_merged(&variants[b]);
        (together.saturating_sub(alone[a].0 + alone[b].0), None)
    };
    let mut stored_added = 0u128;
    let mut pairs: Vec<Vec<Pair>> =
        (0..classes.len()).map(|b| (0..b).map(|a| stored_pair(&variants, &alone, a, b)).collect()).collect();
    // Past `room`, only merges that cost nothing (leaving layers to split
    // the classes where that helps).
    while classes.len() > 1 {
        let least = pairs.iter().flatten().map(|p| p.0).min().expect("two classes or more");
        let mut best: Option<(u128, usize, usize)> = None;
        for b in 0..pairs.len() {
            for a in 0..b {
                if pairs[b][a].0 != least {
                    continue;
                }
                let (added, _) = *pairs[b][a].1.get_or_insert_with(|| {
                    let together = costs.of(&merged(&classes, a, b), &mut scratch);
                    (together.1.saturating_sub(alone[a].1 + alone[b].1), together)
                });
                if best.is_none_or(|(d, ..)| added < d) {
                    best = Some((added, a, b));
                }
            }
        }
        let (added, a, b) = best.expect("a pair stores the least");
        if classes.len() <= room && (least, added) != (0, 0) {
            break;
        }
        let together = pairs[b][a].1.expect("evaluated").1;

        stored_added += least;
        let gone = classes.remove(b);
        alone.remove(b);
        variants.remove(b);
        pairs.remove(b);
        for row in pairs.iter_mut().skip(b) {
            row.remove(b);
        }
        let kept = &mut classes[a];
        if kept.signature != gone.signature {
            let mut sig = kept.signature.take().unwrap_or_default();
            sig.extend(gone.signature.unwrap_or_default());
            sig.sort_unstable();
            sig.dedup();
            kept.signature = Some(sig);
        }
        kept.paths.extend(gone.paths);
        kept.paths.sort_unstable();
        kept.volatile.extend(gone.volatile);
        kept.volatile.sort_unstable();
        kept.volatile.dedup();
        kept.bytes += gone.bytes;
        alone[a] = together;
        variants[a] = costs.variants(&classes[a].paths);
        for other in (0..classes.len()).filter(|&o| o != a) {
            let (lo, hi) = (a.min(other), a.max(other));
            pairs[hi][lo] = stored_pair(&variants, &alone, lo, hi);
        }
    }
    (classes, stored_added)
}

/// [`crate::plan`] for the shared strategy with a family, with its tuning.
pub fn plan_shared_with_family(
    graph: &Graph,
    budget: usize,
    family: &Family,
    opts: &SharedOptions,
) -> Result<Plan, Error> {
    if budget == 0 {
        return Err(Error::ZeroBudget);
    }
    if family.is_empty() || budget == 1 || graph.is_empty() {
        return plan_shared(graph, budget, opts);
    }

    // U, sorted by path so that indices do not depend on input order.
    let mut infos = family.infos.clone();
    for info in graph.infos() {
        infos.entry(info.path.clone()).or_insert_with(|| info.clone());
    }
    let universe =
        Graph::new(infos.into_values().collect()).map_err(|e| Error::InconsistentFamily(e.to_string()))?;
    let n = universe.len();
    let held: Vec<bool> = (0..n).map(|i| graph.index_of(&universe.info(i).path).is_some()).collect();

    // Signature classes of the member paths, and the paths of no member.
    // A member path's volatility signature: the volatile paths in its
    // closure (see `Volatility`); it depends only on the path's closure.
    let ctx = Context::new(&universe, opts);
    let member: Vec<bool> = (0..n).map(|i| family.infos.contains_key(&universe.info(i).path)).collect();
    let volatility = Volatility::new(&universe, &ctx.desc, &member, &family.history);
    let signature_of: Vec<Vec<usize>> = (0..n)
        .map(|i| {
            let p = &universe.info(i).path;
            (0..family.members.len()).filter(|&m| family.members[m].1.contains(p)).collect()
        })
        .collect();
    // What one member alone holds and is tiny (its own root: an env, a
    // wrapper) is only ever in images built on that member: it joins their
    // top rather than spend a layer of every image's share on itself.
    let bytes = |i: usize| universe.info(i).nar_size as u128;
    let member_bytes: u128 = (0..n).filter(|&i| member[i]).map(bytes).sum();
    let mut alone: BTreeMap<usize, u128> = BTreeMap::new();
    for i in (0..n).filter(|&i| signature_of[i].len() == 1) {
        *alone.entry(signature_of[i][0]).or_default() += bytes(i);
    }
    // So does a member's sole root (its closure is the root's: an env, a
    // wrapper) when tiny, whatever else that member alone holds: it depends
    // on every volatile library, so it would make a class of its own.
    let anc = crate::bits::ancestors(&universe);
    let sole_root: Vec<Option<usize>> = (0..family.members.len())
        .map(|m| {
            let in_m = |i: usize| signature_of[i].contains(&m);
            let mut roots = (0..n).filter(|&i| in_m(i) && !anc.ones(i).any(in_m));
            match (roots.next(), roots.next()) {
                (Some(r), None) => Some(r),
                _ => None,
            }
        })
        .collect();
    let on_top = |i: usize, sig: &[usize]| match sig {
        [] => true,
        [m] => {
            alone[m] * TINY_ALONE < member_bytes
                || (sole_root[*m] == Some(i) && bytes(i) * TINY_ALONE < member_bytes)
        }
        _ => false,
    };
    let mut by_signature: BTreeMap<(Vec<usize>, Vec<usize>), Vec<usize>> = BTreeMap::new();
    let mut own: Vec<usize> = Vec::new();
    for (i, sig) in signature_of.iter().enumerate() {
        if on_top(i, sig) {
            own.push(i);
        } else {
            by_signature.entry((sig.clone(), volatility.signature(&ctx.desc, i))).or_default().push(i);
        }
    }
    let mut classes: Vec<Class> = by_signature
        .into_iter()
        .map(|((sig, volatile), paths)| Class::new(&universe, Some(sig), volatile, paths))
        .collect();
    // Widest signatures first, then by signature (members are sorted), the
    // stable paths before the volatile cones.
    classes.sort_by(|a, b| a.key().cmp(&b.key()));

    // The member classes' share of the budget; the top keeps the rest.
    let room = budget.saturating_sub(family.top_layers).max(1);
    // Volatile updates start light, so that the stable classes keep layers
    // for the updates nobody foresaw; a library whose update would still
    // re-send more than RESEND_TARGET of what it changes weighs BOOST times
    // more, and the split is made again (a few rounds at most).
    // Where no split gets every library within the target, the one that
    // misses it least (summed over the libraries) is kept.
    // (What does not change with the boosts, once.)
    let holders = holders(family.members.len());
    let rank = name_ranks(&universe);
    let mut boost = vec![1u128; volatility.libraries.len()];
    let (desc, signature_of, holders) = (&ctx.desc, &signature_of[..], &holders[..]);
    // Each class's layers by the intrinsic rules, in name order.
    let layers_of = |split: &[Class], shares: &[Share]| -> ClassLayers {
        split
            .iter()
            .zip(shares)
            .map(|(c, &(share, t))| {
                let mut g = ctx.groups_at(&c.paths, share, t);
                g.iter_mut().for_each(|g| g.sort_unstable_by_key(|&i| rank[i]));
                g.sort_unstable_by_key(|g| g.iter().map(|&i| rank[i]).collect::<Vec<_>>());
                g
            })
            .collect()
    };
    let mut best: Option<(u128, ClassLayers, Weights, bool)> = None;
    for _ in 0..=BOOST_ROUNDS {
        let weights = Weights::new(&universe, &ctx.desc, &anc, &member, &volatility, &boost);
        let costs = MergeCosts { universe: &universe, desc, weights: &weights, signature_of, holders };
        let (split, shares) = split_classes(&ctx, &costs, &classes, room);
        let groups = layers_of(&split, &shares);
        let over = weights.over_target(&universe, &groups);
        let miss: u128 = over.iter().map(|&(_, m)| m).sum();
        let max = BOOST.pow(BOOST_ROUNDS as u32);
        let raise: Vec<usize> = over.iter().map(|&(l, _)| l).filter(|&l| boost[l] < max).collect();
        if best.as_ref().is_none_or(|b| miss < b.0) {
            best = Some((miss, groups, weights, split.len() < classes.len()));
        }
        if miss == 0 || raise.is_empty() {
            break;
        }
        raise.into_iter().for_each(|l| boost[l] *= BOOST);
    }
    let (_, mut groups, weights, merged) = best.expect("one round at least");

    // Then paths move across the classes' layers.
    let costs = MergeCosts { universe: &universe, desc, weights: &weights, signature_of, holders };
    refine(&costs, &rank, &mut groups, merged);

    let mut layers: Vec<Vec<usize>> = Vec::new();
    // (A class's layers may hold other classes' paths after `refine`.)
    for groups in groups {
        let groups = order_by_closure_size(&universe, &ctx.desc, groups);
        layers.extend(groups.into_iter().map(|g| g.into_iter().filter(|&i| held[i]).collect::<Vec<_>>()));
        layers.retain(|l| !l.is_empty());
    }
    let own: Vec<usize> = own.into_iter().filter(|&i| held[i]).collect();
    if !own.is_empty() {
        // The classes used at most `room` layers, and `room` is
        // `budget - top_layers`, or 1 when that is less: `left >= 1`.
        let left = budget - layers.len();
        layers.extend(order_by_closure_size(&universe, &ctx.desc, ctx.groups(&own, left)));
    }

    let plan = Plan {
        layers: layers
            .into_iter()
            .map(|l| l.into_iter().map(|i| universe.info(i).path.clone()).collect())
            .collect(),
    };
    plan.validate(graph, budget)?;
    Ok(plan)
}

/// Merges `classes` to fit `room` layers and shares the layers out: fewer,
/// merged classes leave layers to split the others, so of the merge targets
/// from `room` down, the one that stores the fewest extra bytes, then whose
/// allocation costs least (ties: fewer merges). Only where layers are scarce
/// for the classes, and a dozen targets at most: each costs an allocation.
fn split_classes(
    ctx: &Context,
    costs: &MergeCosts,
    classes: &[Class],
    room: usize,
) -> (Vec<Class>, Vec<Share>) {
    let fit = |merged: Vec<Class>, stored: u128| {
        let merged = merge_to_fit(merged, room);
        let (shares, updates) = allocate(ctx, costs.universe, costs.weights, &merged, room);
        // Sharing first: no target may store more than the least merging.
        ((stored, updates), merged, shares)
    };
    // The best target's cost, classes fitted and shared out, and as merged.
    type Best = (Cost, Vec<Class>, Vec<Share>, Vec<Class>, u128);
    let mut best: Option<Best> = None;
    let lowest = if classes.len() + 8 < room { room } else { (room / 2).max(room.saturating_sub(12)).max(1) };
    for target in (lowest..=room).rev() {
        let (merged, stored) = merge_by_cost(costs, classes.to_vec(), target);
        let (cost, fitted, shares) = fit(merged.clone(), stored);
        if best.as_ref().is_none_or(|b| cost < b.0) {
            best = Some((cost, fitted, shares, merged, stored));
        }
    }
    let (cost, fitted, shares, merged, stored) = best.expect("room >= 1");
    // The moves, for the best target only (they cost a few allocations'
    // worth each).
    let (moved, stored) = improve(costs, classes, merged, stored);
    let (moved_cost, moved, moved_shares) = fit(moved, stored);
    if moved_cost < cost {
        (moved, moved_shares)
    } else {
        (fitted, shares)
    }
}

impl Weights {
    /// The volatile libraries (indices) whose update would re-send more than
    /// [`RESEND_TARGET`] of what it changes through the family's layers, and
    /// by how much (in millionths of what it changes).
    fn over_target(&self, universe: &Graph, classes: &[Vec<Vec<usize>>]) -> Vec<(usize, u128)> {
        (0..self.libraries.len())
            .filter_map(|l| {
                let changed = &self.libraries[l].2;
                let sent: u128 = classes.iter().flatten().map(|g| self.resent(universe, l, g)).sum();
                let (sent, allowed) = (sent * RESEND_TARGET.1, changed * RESEND_TARGET.0);
                (sent > allowed)
                    .then(|| (l, (sent - allowed) * 1_000_000 / (changed * RESEND_TARGET.1).max(1)))
            })
            .collect()
    }

    /// The bytes of layer `g` if volatile library `l`'s update re-sends it
    /// (changes one of its paths), else 0.
    fn resent(&self, universe: &Graph, l: usize, g: &[usize]) -> u128 {
        let cone = &self.libraries[l].1;
        if g.iter().any(|&i| cone[i / 64] >> (i % 64) & 1 == 1) {
            g.iter().map(|&i| universe.info(i).nar_size as u128).sum()
        } else {
            0
        }
    }
}

/// How many times [`refine`] goes over the layers at most.
const REFINE_PASSES: usize = 8;

/// How much work [`refine`] may do, in paths times holders per cost
/// evaluated: a bound on its time whatever the family (a dozen members make
/// 78 holders), which is a count, so the result stays deterministic. About
/// 2.5 times what the bench corpus needs at any budget (0.1 s).
const REFINE_WORK: usize = 1 << 22;

/// Each path's place in name order (then path): an update renames what it
/// changes, so what is ordered by name does not take another course then.
fn name_ranks(universe: &Graph) -> Vec<usize> {
    let mut by_name: Vec<usize> = (0..universe.len()).collect();
    by_name.sort_by_key(|&i| (universe.info(i).path.name(), universe.info(i).path.as_str()));
    let mut rank = vec![0usize; universe.len()];
    by_name.iter().enumerate().for_each(|(r, &i)| rank[i] = r);
    rank
}

/// The intrinsic rules group paths by anchor, which suits each path's own
/// change but not a deep library's: a layer holding one of its dependents
/// is re-sent whole when it changes. So the layers of the member classes
/// change while that lowers the family's cost (bytes stored, then needless
/// update bytes, as for merging), never emptying a layer:
///
/// - a move takes, from one layer, the paths that are or depend on one path
///   q of the layer's closure (all of them, so that q leaves it) to another
///   layer, the best target first;
/// - where no move helps, two layers merge and such a set of paths becomes
///   a layer of its own, if that helps.
///
/// No volatile library's update may come to re-send more by these, except,
/// where classes had to be merged (`merged`: layers are scarce), up to
/// [`RESEND_TARGET`] of what it changes. In name order, so the same after
/// an update as before wherever the costs allow. `classes`: each class's
/// layers; a layer keeps its place (its class's order), whatever it holds.
fn refine(costs: &MergeCosts, rank: &[usize], classes: &mut [Vec<Vec<usize>>], merged: bool) {
    let flat: Vec<Vec<usize>> = classes.iter().flatten().cloned().collect();
    let mut layers = Refine::new(costs, rank, flat);
    layers.may_raise = merged;
    for _ in 0..REFINE_PASSES {
        let mut moved = false;
        for from in 0..layers.groups.len() {
            while layers.move_from(from) {
                moved = true;
            }
        }
        if !moved && !layers.merge_and_split() {
            break;
        }
    }
    let mut refined = layers.groups.into_iter();
    for class in classes {
        let n = class.len();
        *class = refined.by_ref().take(n).collect();
    }
}

/// [`refine`]'s state: the layers, their costs and what each volatile
/// library's update re-sends through them.
struct Refine<'a> {
    costs: &'a MergeCosts<'a>,
    rank: &'a [usize],
    groups: Vec<Vec<usize>>,
    cost: Vec<Cost>,
    sent: Vec<u128>,
    /// Whether a volatile library's re-send may rise (up to the target).
    may_raise: bool,
    /// Work done so far: holders times paths, per cost evaluated (see
    /// [`REFINE_WORK`]).
    evaluated: usize,
    scratch: Vec<u64>,
}

/// A layer replaced: its index, its new paths and their cost.
type Replaced = (usize, Vec<usize>, Cost);
/// Layers replaced at once.
type Change = Vec<Replaced>;
/// A change of [`Cost`], signed.
type Delta = (i128, i128);
/// Each class's layers.
type ClassLayers = Vec<Vec<Vec<usize>>>;

impl<'a> Refine<'a> {
    fn new(costs: &'a MergeCosts<'a>, rank: &'a [usize], groups: Vec<Vec<usize>>) -> Self {
        let mut scratch = vec![0u64; costs.desc.words()];
        let cost = groups.iter().map(|g| costs.of(g, &mut scratch)).collect();
        let mut r =
            Refine { costs, rank, groups, cost, sent: Vec::new(), may_raise: false, evaluated: 0, scratch };
        r.sent = (0..costs.weights.libraries.len())
            .map(|l| r.groups.iter().map(|g| r.sent_by(l, g)).sum())
            .collect();
        r
    }

    fn of(&mut self, paths: &[usize]) -> Cost {
        self.evaluated += self.costs.holders.len() * (paths.len() + 1);
        self.costs.of(paths, &mut self.scratch)
    }

    fn sent_by(&self, l: usize, g: &[usize]) -> u128 {
        self.costs.weights.resent(self.costs.universe, l, g)
    }

    /// The cost of the layers `change` replaces, before and after, as
    /// (before, after) in signed form for sums of several changes.
    fn delta(&self, change: &Change) -> Delta {
        change.iter().fold((0, 0), |(s, n), (k, _, c)| {
            (s + c.0 as i128 - self.cost[*k].0 as i128, n + c.1 as i128 - self.cost[*k].1 as i128)
        })
    }

    /// Applies `change` if it lowers the cost and keeps every volatile
    /// library's re-send within bounds.
    fn apply(&mut self, change: Change) -> bool {
        if self.delta(&change) >= (0, 0) {
            return false;
        }
        let libraries = &self.costs.weights.libraries;
        let now: Vec<u128> = (0..libraries.len())
            .map(|l| {
                let gone: u128 = change.iter().map(|(k, ..)| self.sent_by(l, &self.groups[*k])).sum();
                let new: u128 = change.iter().map(|(_, g, _)| self.sent_by(l, g)).sum();
                self.sent[l] + new - gone
            })
            .collect();
        let (n, d) = RESEND_TARGET;
        let within = |l: usize| now[l] * d <= libraries[l].2 * n;
        if !(0..libraries.len()).all(|l| now[l] <= self.sent[l] || (self.may_raise && within(l))) {
            return false;
        }
        for (k, g, c) in change {
            (self.groups[k], self.cost[k]) = (g, c);
        }
        self.sent = now;
        true
    }

    /// The layers other than `from` that hold a path of a member signature
    /// that `paths` have: a move or merge elsewhere would only store more
    /// (the ones worth trying; a heuristic).
    fn kin(&self, paths: &[usize], from: usize) -> Vec<usize> {
        let sig = &self.costs.signature_of;
        let mut mine: Vec<&Vec<usize>> = paths.iter().map(|&i| &sig[i]).collect();
        mine.sort_unstable();
        mine.dedup();
        let holds = |g: &Vec<usize>| g.iter().any(|&i| mine.binary_search(&&sig[i]).is_ok());
        (0..self.groups.len()).filter(|&t| t != from && holds(&self.groups[t])).collect()
    }

    /// The sets a move may take from layer `from`: for each q of its
    /// closure, in name order, the paths that are or depend on q, unless
    /// that is none or all of them; each set once.
    fn takes(&self, from: usize) -> Vec<(Vec<usize>, Vec<usize>)> {
        let desc = self.costs.desc;
        let mut closure = vec![0u64; desc.words()];
        for &p in &self.groups[from] {
            closure.iter_mut().zip(desc.row(p)).for_each(|(a, b)| *a |= b);
            closure[p / 64] |= 1 << (p % 64);
        }
        let mut causes: Vec<usize> = crate::bits::ones(&closure).collect();
        causes.sort_unstable_by_key(|&i| self.rank[i]);
        let mut seen: BTreeSet<Vec<usize>> = BTreeSet::new();
        causes
            .into_iter()
            .filter_map(|q| {
                let (take, keep): (Vec<usize>, Vec<usize>) =
                    self.groups[from].iter().partition(|&&p| p == q || desc.get(p, q));
                (!take.is_empty() && !keep.is_empty() && seen.insert(take.clone())).then_some((take, keep))
            })
            .collect()
    }

    /// The first set of layer `from` (see `takes`) whose best move lowers
    /// the cost, moved.
    fn move_from(&mut self, from: usize) -> bool {
        for (take, keep) in self.takes(from) {
            if self.evaluated > REFINE_WORK {
                return false;
            }
            let left = self.of(&keep);
            let mut options: Vec<(Delta, Change)> = Vec::new();
            for to in self.kin(&take, from) {
                let mut joined = [&self.groups[to][..], &take[..]].concat();
                joined.sort_unstable();
                let c = self.of(&joined);
                let change = vec![(from, keep.clone(), left), (to, joined, c)];
                options.push((self.delta(&change), change));
            }
            // Best first; ties to the earlier layer (a stable sort).
            options.sort_by_key(|o| o.0);
            if options.into_iter().take_while(|o| o.0 < (0, 0)).any(|(_, change)| self.apply(change)) {
                return true;
            }
        }
        false
    }

    /// The best merge of two layers with the best split of a third, applied
    /// if it lowers the cost.
    fn merge_and_split(&mut self) -> bool {
        let k = self.groups.len();
        if k < 3 || self.evaluated > REFINE_WORK {
            return false;
        }
        let gain = |after: Cost, before: &[Cost]| -> Delta {
            let (s, n) = before.iter().fold((0i128, 0i128), |t, c| (t.0 + c.0 as i128, t.1 + c.1 as i128));
            (after.0 as i128 - s, after.1 as i128 - n)
        };
        // Each split: its cost change, the layer it leaves, and the new one.
        let mut splits: Vec<(Delta, Replaced, (Vec<usize>, Cost))> = Vec::new();
        for c in 0..k {
            for (take, keep) in self.takes(c) {
                let (kc, tc) = (self.of(&keep), self.of(&take));
                let d = gain((kc.0 + tc.0, kc.1 + tc.1), &[self.cost[c]]);
                splits.push((d, (c, keep, kc), (take, tc)));
            }
        }
        splits.sort_by_key(|s| s.0);
        // Each merge: its cost change, the merged layer, and the layer freed.
        let mut merges: Vec<(Delta, Replaced, usize)> = Vec::new();
        for a in 0..k {
            for b in self.kin(&self.groups[a], a).into_iter().filter(|&b| b > a) {
                let mut joined = [&self.groups[a][..], &self.groups[b][..]].concat();
                joined.sort_unstable();
                let c = self.of(&joined);
                merges.push((gain(c, &[self.cost[a], self.cost[b]]), (a, joined, c), b));
            }
        }
        merges.sort_by_key(|m| m.0);
        let mut options: Vec<(Delta, Change)> = Vec::new();
        for (dm, merged, freed) in &merges {
            let (a, b) = (merged.0, *freed);
            if let Some((ds, left, (take, tc))) = splits.iter().find(|s| s.1 .0 != a && s.1 .0 != b) {
                let total = (dm.0 + ds.0, dm.1 + ds.1);
                if total < (0, 0) {
                    options.push((total, vec![merged.clone(), left.clone(), (b, take.clone(), *tc)]));
                }
            }
        }
        options.sort_by_key(|o| o.0);
        options.into_iter().any(|(_, change)| self.apply(change))
    }
}

/// How many times [`improve`] goes over the atoms at most.
const IMPROVE_PASSES: usize = 8;

/// Merging in pairs cannot undo an early merge that later ones make costly,
/// so afterwards single `atoms` (the classes before merging) move between
/// the `merged` classes while a move lowers the family's cost (bytes stored,
/// then needless update bytes), the best move first, a few passes at most.
/// Returns the classes, in the same order, and the bytes stored in addition
/// to the atoms alone (`stored` was that before the moves).
fn improve(costs: &MergeCosts, atoms: &[Class], merged: Vec<Class>, stored: u128) -> (Vec<Class>, u128) {
    if merged.len() == atoms.len() || merged.len() < 2 {
        return (merged, stored);
    }
    let k = merged.len();
    let mut group: Vec<usize> = atoms
        .iter()
        .map(|a| merged.iter().position(|c| c.paths.binary_search(&a.paths[0]).is_ok()).expect("merged"))
        .collect();
    let paths_of = |g: usize, group: &[usize]| -> Vec<usize> {
        let mut p: Vec<usize> = atoms
            .iter()
            .zip(group)
            .filter(|&(_, &x)| x == g)
            .flat_map(|(a, _)| a.paths.iter().copied())
            .collect();
        p.sort_unstable();
        p
    };
    let mut scratch = vec![0u64; costs.desc.words()];
    let mut cost: Vec<Cost> = (0..k).map(|g| costs.of(&paths_of(g, &group), &mut scratch)).collect();
    let mut size = vec![0usize; k];
    group.iter().for_each(|&g| size[g] += 1);
    let sum = |c: &[Cost]| c.iter().fold((0u128, 0u128), |t, c| (t.0 + c.0, t.1 + c.1));
    let before = sum(&cost).0;
    for _ in 0..IMPROVE_PASSES {
        let mut moved = false;
        for a in 0..atoms.len() {
            let from = group[a];
            if size[from] == 1 {
                continue;
            }
            group[a] = usize::MAX;
            let left = costs.of(&paths_of(from, &group), &mut scratch);
            let total = sum(&cost);
            let mut best: Option<(Cost, usize, Cost)> = None;
            // Only into a class holding an atom of the same member
            // signature: any other move stores more.
            let mut targets: Vec<usize> = atoms
                .iter()
                .zip(&group)
                .filter(|&(b, &g)| g != from && g != usize::MAX && b.signature == atoms[a].signature)
                .map(|(_, &g)| g)
                .collect();
            targets.sort_unstable();
            targets.dedup();
            for to in targets {
                group[a] = to;
                let joined = costs.of(&paths_of(to, &group), &mut scratch);
                let after = (
                    total.0 - cost[from].0 - cost[to].0 + left.0 + joined.0,
                    total.1 - cost[from].1 - cost[to].1 + left.1 + joined.1,
                );
                if after < total && best.is_none_or(|b| after < b.0) {
                    best = Some((after, to, joined));
                }
            }
            match best {
                Some((_, to, joined)) => {
                    group[a] = to;
                    (cost[from], cost[to]) = (left, joined);
                    size[from] -= 1;
                    size[to] += 1;
                    moved = true;
                }
                None => group[a] = from,
            }
        }
        if !moved {
            break;
        }
    }
    let classes = (0..k)
        .map(|g| {
            let members: Vec<&Class> =
                atoms.iter().zip(&group).filter(|&(_, &x)| x == g).map(|(a, _)| a).collect();
            let mut signature: Vec<usize> =
                members.iter().flat_map(|a| a.signature.iter().flatten().copied()).collect();
            signature.sort_unstable();
            signature.dedup();
            let mut volatile: Vec<usize> = members.iter().flat_map(|a| a.volatile.iter().copied()).collect();
            volatile.sort_unstable();
            volatile.dedup();
            let paths = paths_of(g, &group);
            let bytes = members.iter().map(|a| a.bytes).sum();
            Class { signature: Some(signature), volatile, paths, bytes }
        })
        .collect();
    let after = sum(&cost).0;
    (classes, (stored + after).saturating_sub(before))
}

/// More classes than `room` layers: the classes with the fewest paths (then
/// bytes, then order) are merged into one, placed after the others.
fn merge_to_fit(mut classes: Vec<Class>, room: usize) -> Vec<Class> {
    if classes.len() <= room {
        return classes;
    }
    let keep = room - 1;
    let mut rank: Vec<usize> = (0..classes.len()).collect();
    rank.sort_by(|&a, &b| {
        (classes[b].paths.len(), classes[b].bytes, a).cmp(&(classes[a].paths.len(), classes[a].bytes, b))
    });
    let mut kept = vec![false; classes.len()];
    for &k in &rank[..keep] {
        kept[k] = true;
    }
    let mut rest = Class { signature: None, volatile: Vec::new(), paths: Vec::new(), bytes: 0 };
    let mut out = Vec::with_capacity(room);
    for (k, c) in classes.drain(..).enumerate() {
        if kept[k] {
            out.push(c);
        } else {
            rest.paths.extend(c.paths);
            rest.volatile.extend(c.volatile);
            rest.bytes += c.bytes;
        }
    }
    rest.paths.sort_unstable();
    rest.volatile.sort_unstable();
    rest.volatile.dedup();
    out.push(rest);
    out
}

/// Bytes an update would re-send needlessly through the layers `groups`
/// (member paths): a change of a path q changes q and everything that
/// depends on q, and re-sends every layer holding one of those; summed over
/// every q, weighted by [`Weights`], the bytes of such layers' paths that
/// did not change. For a layer L with closure C, q touches L iff q is in C,
/// and then p in L is re-sent needlessly iff q is neither p nor in p's
/// closure: L costs Σ_p bytes(p)·(w(C) − w(p) − w(deps(p))).
fn needless_bytes(
    universe: &Graph,
    desc: &BitMatrix,
    w: &Weights,
    groups: &[Vec<usize>],
    scratch: &mut [u64],
) -> u128 {
    let mut total = 0u128;
    for layer in groups {
        for &p in layer {
            for (a, b) in scratch.iter_mut().zip(desc.row(p)) {
                *a |= b;
            }
            scratch[p / 64] |= 1 << (p % 64);
        }
        // Every member path weighs UPDATE: the closure's weight is a count.
        let closure: u128 =
            scratch.iter().zip(&w.counted).map(|(a, m)| (a & m).count_ones() as u128).sum::<u128>() * UPDATE;
        scratch.iter_mut().for_each(|w| *w = 0);
        for &p in layer {
            total += universe.info(p).nar_size as u128 * (closure - w.of(p) - w.deps[p]);
        }
        // A volatile library's update re-sends the layer if it changes one
        // of its paths, and with it the paths it does not change.
        for (weight, cone, _) in &w.libraries {
            let changed = |p: usize| cone[p / 64] >> (p % 64) & 1 == 1;
            if layer.iter().any(|&p| changed(p)) {
                let kept: u128 =
                    layer.iter().filter(|&&p| !changed(p)).map(|&p| universe.info(p).nar_size as u128).sum();
                total = total.saturating_add(weight.saturating_mul(kept));
            }
        }
    }
    total
}

/// What one member path's update weighs in [`Weights`]: every path the
/// same, in a unit fine enough for the volatile libraries' weights, which
/// are fractions of all of them together.
const UPDATE: u128 = 1 << 24;

/// How likely each path is to be updated (an update changes it and
/// everything that depends on it), and that summed over each path's
/// dependencies; and the volatile libraries' updates.
struct Weights {
    /// The member paths (a bit set over U): each one's update weighs
    /// UPDATE, the others' nothing.
    counted: Vec<u64>,
    deps: Vec<u128>,
    /// Each volatile library's update: its weight, the paths it changes
    /// (the library's paths and their dependents, a bit set over U) and
    /// their member bytes.
    libraries: Vec<(u128, Vec<u64>, u128)>,
}

impl Weights {
    /// `member[i]`: whether path i is in a member; the paths of no member
    /// (the image's own) are left out, so the weights depend only on the
    /// family. Any member path may be updated, each as likely as any other
    /// (as the bench's every-package-in-turn measure counts them); each
    /// volatile library changes as a whole, weighted per unit of re-send
    /// ratio (so a library whose update is small, where
    /// re-sending a little more is a big ratio, counts more per byte) by its
    /// score times `boost[l]` / [`VOLATILE_SHARE`] times all other updates
    /// together.
    fn new(
        universe: &Graph,
        desc: &BitMatrix,
        anc: &BitMatrix,
        member: &[bool],
        volatility: &Volatility,
        boost: &[u128],
    ) -> Weights {
        let n = universe.len();
        let bytes = |i: usize| if member[i] { universe.info(i).nar_size as u128 } else { 0 };
        let of = |q: usize| if member[q] { UPDATE } else { 0 };
        let mut counted = vec![0u64; desc.words()];
        (0..n).filter(|&q| member[q]).for_each(|q| counted[q / 64] |= 1 << (q % 64));
        let deps = (0..n).map(|p| desc.ones(p).map(of).sum()).collect();
        let total: u128 = (0..n).map(bytes).sum::<u128>().max(1);
        let others: u128 = (0..n).map(of).sum::<u128>() >> 4;
        let libraries = volatility
            .libraries
            .iter()
            .zip(boost)
            .map(|((score, paths), boost)| {
                let mut cone = vec![0u64; desc.words()];
                for &v in paths {
                    cone[v / 64] |= 1 << (v % 64);
                    for (a, b) in cone.iter_mut().zip(anc.row(v)) {
                        *a |= b;
                    }
                }
                // Per unit of re-send ratio (so per byte, over the bytes
                // it changes, at least 1/10000 of the family's), it weighs
                // its score × its boost / VOLATILE_SHARE times every other
                // update together.
                let changed: u128 = crate::bits::ones(&cone).map(bytes).sum::<u128>().max(1);
                let per_ratio = *score as u128 * boost * others * (total << 4) / VOLATILE_SHARE;
                (per_ratio / changed.max(total / 10_000), cone, changed)
            })
            .collect();
        Weights { counted, deps, libraries }
    }

    /// What path `p`'s own update weighs.
    fn of(&self, p: usize) -> u128 {
        if self.counted[p / 64] >> (p % 64) & 1 == 1 {
            UPDATE
        } else {
            0
        }
    }
}

/// How each class is split: the layers it may use and its singleton
/// threshold (a rung of the ladder), at most `room` layers in all, with the
/// least [`needless_bytes`] summed over the classes (exactly, by dynamic
/// programming over the layers each choice really uses; ties to the
/// earlier-found choice: fewer layers, smaller share, lower rung). It
/// depends only on the classes, so on the family, never on the image.
/// `classes.len() <= room`.
fn allocate(
    ctx: &Context,
    universe: &Graph,
    weights: &Weights,
    classes: &[Class],
    room: usize,
) -> (Vec<Share>, u128) {
    let mut scratch = vec![0u64; ctx.desc.words()];
    // Per class and number of layers used, the cheapest (share, rung).
    let options: Vec<BTreeMap<usize, (u128, usize, u128)>> = classes
        .iter()
        .map(|c| {
            let mut best: BTreeMap<usize, (u128, usize, u128)> = BTreeMap::new();
            let most = c.paths.len().min(room - classes.len() + 1);
            for share in 1..=most {
                for t in ctx.rungs(&c.paths, share) {
                    let groups = ctx.groups_at(&c.paths, share, t);
                    let cost = needless_bytes(universe, &ctx.desc, weights, &groups, &mut scratch);
                    let e = best.entry(groups.len()).or_insert((cost, share, t));
                    if cost < e.0 {
                        *e = (cost, share, t);
                    }
                }
            }
            best
        })
        .collect();
    // table[k][u]: least cost of the first k classes in at most u layers,
    // and the layers class k-1 uses there.
    let mut table: Vec<Vec<Option<(u128, usize)>>> = vec![vec![Some((0, 0)); room + 1]];
    for opts in &options {
        let prev = table.last().expect("row 0");
        let row = (0..=room)
            .map(|u| {
                let mut slot: Option<(u128, usize)> = None;
                for (&used, &(cost, _, _)) in opts.range(..=u) {
                    if let Some((c, _)) = prev[u - used] {
                        if slot.is_none_or(|s| c + cost < s.0) {
                            slot = Some((c + cost, used));
                        }
                    }
                }
                slot
            })
            .collect();
        table.push(row);
    }
    let mut out = vec![(0, 0); classes.len()];
    let mut u = room;
    let total = table[classes.len()][room].expect("one layer per class fits").0;
    for k in (0..classes.len()).rev() {
        let (_, used) = table[k + 1][u].expect("one layer per class fits");
        let (_, share, t) = options[k][&used];
        out[k] = (share, t);
        u -= used;
    }
    (out, total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Strategy;

    fn plan_with_family(
        graph: &Graph,
        strategy: Strategy,
        budget: usize,
        family: &Family,
    ) -> Result<Plan, Error> {
        crate::plan(graph, strategy, budget, Some(family))
    }
    use crate::sharing::{family_report, plan_layers, pull_bytes};
    use crate::tests::{graph, names, random_dag, sp};
    use nix_layer_store::StorePath;

    const M: u64 = 1 << 20;
    const K: u64 = 1 << 10;

    /// Three nested images over libc: base ⊂ dev ⊂ xl, plus helpers.
    fn nested() -> (Graph, Graph, Graph) {
        let base: &[(&str, &[&str], u64)] = &[
            ("libc", &[], 13 * M),
            ("zlib", &["libc"], 100 * K),
            ("openssl", &["libc"], 5 * M),
            ("py", &["openssl", "zlib", "libc"], 20 * M),
            ("pylib", &["py"], 300 * K),
            ("certs", &[], 200 * K),
        ];
        let dev: &[(&str, &[&str], u64)] = &[
            ("curl", &["openssl", "zlib"], 400 * K),
            ("git", &["curl", "zlib"], 30 * M),
            ("git-doc", &["git"], 2 * M),
            ("jq", &["libc"], 100 * K),
            ("node", &["openssl", "zlib"], 60 * M),
        ];
        let xl: &[(&str, &[&str], u64)] = &[
            ("gcc", &["libc"], 90 * M),
            ("binutils", &["zlib"], 10 * M),
            ("make", &["libc"], 500 * K),
            ("vim", &["libc", "py"], 4 * M),
            ("tmux", &["libc"], 600 * K),
            ("ssh", &["openssl"], 2 * M),
        ];
        let b = graph(base);
        let d = graph(&[base, dev].concat());
        let x = graph(&[base, dev, xl].concat());
        (b, d, x)
    }

    fn fam(gs: &[(&str, &Graph)]) -> Family {
        Family::new(gs.iter().map(|(n, g)| (n.to_string(), (*g).clone())).collect())
    }

    #[test]
    fn a_deep_librarys_small_dependent_leaves_a_big_stable_layer() {
        // lzma is named by no history; procps, a small dependent of it,
        // shares a layer with vim-runtime, which depends on nothing. Every
        // update of lzma then re-sends vim-runtime: the move takes procps
        // to a layer that lzma's update re-sends anyway.
        let g = graph(&[
            ("libc", &[], 13 * M),
            ("lzma", &["libc"], 100 * K),
            ("dpkg", &["lzma", "libc"], 5 * M),
            ("procps", &["lzma", "libc"], 300 * K),
            ("vim-runtime", &[], 40 * M),
            ("gcc", &["libc"], 60 * M),
        ]);
        let i = |n: &str| g.index_of(&sp(n)).unwrap();
        let desc = crate::bits::descendants(&g);
        let anc = crate::bits::ancestors(&g);
        let member = vec![true; g.len()];
        let volatility = Volatility::new(&g, &desc, &member, &History::default());
        let weights =
            Weights::new(&g, &desc, &anc, &member, &volatility, &vec![1; volatility.libraries.len()]);
        let signature_of = vec![vec![0]; g.len()];
        let holders = holders(1);
        let costs = MergeCosts {
            universe: &g,
            desc: &desc,
            weights: &weights,
            signature_of: &signature_of,
            holders: &holders,
        };
        let layers = vec![
            vec![vec![i("vim-runtime"), i("procps")], vec![i("dpkg")]],
            vec![vec![i("gcc")], vec![i("libc"), i("lzma")]],
        ];
        let total = |classes: &[Vec<Vec<usize>>]| {
            let mut scratch = vec![0u64; desc.words()];
            classes
                .iter()
                .flatten()
                .map(|l| costs.of(l, &mut scratch))
                .fold((0, 0), |t, c| (t.0 + c.0, t.1 + c.1))
        };
        let mut refined = layers.clone();
        refine(&costs, &name_ranks(&g), &mut refined, false);
        assert!(total(&refined) < total(&layers));
        // Each class keeps its number of layers, none empty, every path once.
        assert_eq!(refined.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2]);
        let mut all: Vec<usize> = refined.iter().flatten().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..g.len()).collect::<Vec<_>>());
        assert!(refined.iter().flatten().all(|l| !l.is_empty()));
        let vim = refined.iter().flatten().find(|l| l.contains(&i("vim-runtime"))).unwrap();
        assert_eq!(vim, &vec![i("vim-runtime")], "{refined:?}");
    }

    #[test]
    fn nested_images_share_every_layer() {
        let (b, d, x) = nested();
        let family = fam(&[("base", &b), ("dev", &d), ("xl", &x)]);
        let size = |p: &str| x.infos().iter().find(|i| i.path.as_str() == p).map_or(0, |i| i.nar_size);
        // Three classes and the top need 4 layers; at 3 two classes merge.
        for budget in [4, 5, 6, 8, 12, 40] {
            let plans: Vec<Plan> = [&b, &d, &x]
                .iter()
                .map(|g| plan_with_family(g, Strategy::Shared, budget, &family).unwrap())
                .collect();
            for (p, g) in plans.iter().zip([&b, &d, &x]) {
                p.validate(g, budget).unwrap();
            }
            // Every layer of a smaller image is a layer of each larger one,
            // at the same position from the bottom.
            for (small, big) in [(0, 1), (1, 2), (0, 2)] {
                let (s, l) = (&plans[small].layers, &plans[big].layers);
                assert_eq!(s[..], l[..s.len()], "budget {budget}: {small} vs {big}");
            }
            let images: Vec<_> = plans.iter().zip([&b, &d, &x]).map(|(p, g)| plan_layers("", p, g)).collect();
            let r = family_report(&images, &size);
            assert_eq!(r.stored_bytes, r.unique_closure_bytes, "budget {budget}");
            let added: u64 =
                x.infos().iter().filter(|i| d.index_of(&i.path).is_none()).map(|i| i.nar_size).sum::<u64>();
            assert_eq!(pull_bytes(&images[1], &images[2]), added, "budget {budget}");
        }
    }

    #[test]
    fn budget_is_respected_for_every_member_and_more() {
        // Many overlapping random members: more classes than layers.
        let g = random_dag(400, 3);
        let members: Vec<(String, Graph)> = (0..9)
            .map(|k| {
                let roots: Vec<usize> = (k * 7..k * 7 + 5 + k).collect();
                let keep = g.closure(&roots);
                (format!("m{k}"), g.subgraph(&keep).unwrap())
            })
            .collect();
        // Some packages volatile by history, so classes split by cone too.
        let family = Family::new(members.clone()).with_history(volatile_history(&g, 40));
        let others = [g.clone(), g.subgraph(&g.closure(&[1, 50, 200])).unwrap()];
        for budget in [1, 2, 3, 4, 7, 16, 48, 98, 400] {
            let images =
                members.iter().map(|(n, g)| (n.as_str(), g)).chain(others.iter().map(|g| ("other", g)));
            for (name, m) in images {
                let p = plan_with_family(m, Strategy::Shared, budget, &family).unwrap();
                p.validate(m, budget).unwrap_or_else(|e| panic!("{name} at {budget}: {e}"));
            }
            for top in [1, 3, budget] {
                let f = family.clone().with_top_layers(top);
                let p = plan_with_family(&g, Strategy::Shared, budget, &f).unwrap();
                p.validate(&g, budget).unwrap();
            }
        }
    }

    #[test]
    fn deterministic_and_order_free() {
        let (b, d, x) = nested();
        let reversed = |g: &Graph| {
            let mut infos = g.infos().to_vec();
            infos.reverse();
            Graph::new(infos).unwrap()
        };
        let h = volatile_history(&x, 4);
        let f1 = fam(&[("base", &b), ("dev", &d), ("xl", &x)]).with_history(h.clone());
        let f2 = fam(&[("xl", &reversed(&x)), ("base", &b), ("dev", &reversed(&d))]).with_history(h);
        assert_eq!(f1, f2);
        for budget in [2, 5, 9, 30] {
            let a = plan_with_family(&x, Strategy::Shared, budget, &f1).unwrap();
            let c = plan_with_family(&reversed(&x), Strategy::Shared, budget, &f2).unwrap();
            assert_eq!(a, c, "budget {budget}");
            assert_eq!(plan_with_family(&x, Strategy::Shared, budget, &f1).unwrap(), a);
        }
    }

    #[test]
    fn paths_of_no_member_go_on_top() {
        let (b, d, _) = nested();
        let family = fam(&[("base", &b), ("dev", &d)]);
        let mut infos = d.infos().to_vec();
        infos.push(PathInfo::from_raw_references(sp("app"), vec![sp("py"), sp("curl")], 3 * M));
        infos.push(PathInfo::from_raw_references(sp("app-cfg"), vec![sp("app")], 10 * K));
        let img = Graph::new(infos).unwrap();
        for budget in [2, 3, 6, 20] {
            let p = plan_with_family(&img, Strategy::Shared, budget, &family).unwrap();
            p.validate(&img, budget).unwrap();
            // The app's layers are on top and hold nothing else; below
            // them, the layers are those of dev planned alone.
            let names = names(&p);
            let app = names.iter().rev().take_while(|l| l.iter().all(|n| n.starts_with("app"))).count();
            assert_eq!(names[names.len() - app..].iter().flatten().count(), 2, "budget {budget}: {names:?}");
            let dev = plan_with_family(&d, Strategy::Shared, budget, &family).unwrap();
            assert_eq!(p.layers[..p.layers.len() - app], dev.layers[..], "budget {budget}");
        }
    }

    #[test]
    fn empty_family_is_plain_shared() {
        let g = random_dag(300, 5);
        let empty = Family::new(Vec::new());
        for budget in [1, 7, 48, 300] {
            assert_eq!(
                plan_with_family(&g, Strategy::Shared, budget, &empty).unwrap(),
                crate::plan(&g, Strategy::Shared, budget, None).unwrap()
            );
        }
        for s in [Strategy::Popularity, Strategy::Auto] {
            let f = Family::new(vec![("g".into(), g.clone())]);
            assert_eq!(plan_with_family(&g, s, 20, &f).unwrap(), crate::plan(&g, s, 20, None).unwrap());
        }
        assert_eq!(plan_with_family(&g, Strategy::Shared, 0, &empty), Err(Error::ZeroBudget));
    }

    /// A history in which every `step`-th package of `g` changed once.
    fn volatile_history(g: &Graph, step: usize) -> History {
        let mut h = History::default();
        for info in g.infos().iter().step_by(step) {
            let name = crate::shared::package_base_name(info.path.name()).to_owned();
            h.changes.insert(name, crate::catalogue::NameChanges { count: 1, last: 1 });
        }
        h.regenerations = 1;
        h
    }

    /// Whether every layer of `plan` holding a path that `changed` changes
    /// holds only such paths: then that update re-sends only what changed.
    fn cone_apart(g: &Graph, plan: &Plan, changed: &str) -> bool {
        let root = g.index_of(&sp(changed)).unwrap();
        let desc = crate::bits::descendants(g);
        let in_cone = |p: &StorePath| {
            let i = g.index_of(p).unwrap();
            i == root || desc.get(i, root)
        };
        plan.layers.iter().all(|l| l.iter().all(in_cone) || !l.iter().any(in_cone))
    }

    #[test]
    fn volatile_cones_are_kept_apart_by_the_prior() {
        // No history: the prior knows openssl, zlib, curl and libc (glibc).
        // 12 classes (3 member signatures × volatility) and the top fit 13;
        // with room to spare, none is merged to split others.
        let (b, d, x) = nested();
        let family = fam(&[("base", &b), ("dev", &d), ("xl", &x)]);
        assert!(family.history().changes.is_empty());
        for budget in [24, 30, 60] {
            for g in [&b, &d, &x] {
                let p = plan_with_family(g, Strategy::Shared, budget, &family).unwrap();
                p.validate(g, budget).unwrap();
                for lib in ["openssl", "zlib", "curl"] {
                    if g.index_of(&sp(lib)).is_some() {
                        assert!(cone_apart(g, &p, lib), "budget {budget}, {lib}: {:?}", names(&p));
                    }
                }
            }
        }
        // Without volatility the same budget mixes openssl's dependents
        // with stable paths (this is what the split is for).
        let plain =
            plan_shared_with_family(&x, 7, &Family::new(Vec::new()), &SharedOptions::default()).unwrap();
        assert!(!cone_apart(&x, &plain, "openssl"), "{:?}", names(&plain));
    }

    #[test]
    fn history_names_volatile_libraries() {
        // jq is in no prior; once the catalogue's history says it changed,
        // its dependents get layers of their own.
        let (b, d, x) = nested();
        let jq = |extra: &[(&str, &[&str], u64)]| {
            let mut infos = x.infos().to_vec();
            infos.extend(extra.iter().map(|(n, r, s)| {
                PathInfo::from_raw_references(sp(n), r.iter().map(|r| sp(r)).collect(), *s)
            }));
            Graph::new(infos).unwrap()
        };
        let x2 = jq(&[("jq-tool", &["jq", "make"], 3 * M), ("jq-doc", &["jq-tool"], 200 * K)]);
        let base = fam(&[("base", &b), ("dev", &d), ("xl", &x2)]);
        let mut h = History { regenerations: 3, ..History::default() };
        h.changes.insert("jq".into(), crate::catalogue::NameChanges { count: 2, last: 3 });
        let with = base.clone().with_history(h);
        let budget = 30;
        let p = plan_with_family(&x2, Strategy::Shared, budget, &with).unwrap();
        p.validate(&x2, budget).unwrap();
        assert!(cone_apart(&x2, &p, "jq"), "{:?}", names(&p));
        assert_ne!(p, plan_with_family(&x2, Strategy::Shared, budget, &base).unwrap());
    }

    #[test]
    fn a_members_tiny_root_goes_on_top() {
        // Each member has a root of its own (an env), held by no other and
        // depended on by nothing: it joins that image's top instead of
        // costing every image a layer (and a class of its own, as it depends
        // on every volatile library).
        let (b, d, x) = nested();
        let with_root = |g: &Graph, root: &str| {
            let mut infos = g.infos().to_vec();
            let refs = g.infos().iter().map(|i| i.path.clone()).collect();
            infos.push(PathInfo::from_raw_references(sp(root), refs, 4 * K));
            Graph::new(infos).unwrap()
        };
        let (b, d, x) = (with_root(&b, "base-env"), with_root(&d, "dev-env"), with_root(&x, "xl-env"));
        let family = fam(&[("base", &b), ("dev", &d), ("xl", &x)]);
        for budget in [4, 6, 9] {
            let plans: Vec<Plan> = [&b, &d, &x]
                .iter()
                .map(|g| plan_with_family(g, Strategy::Shared, budget, &family).unwrap())
                .collect();
            // (xl also holds compilers no other member has; its root is
            // still its sole root, and tiny.)
            for (p, root) in plans.iter().zip(["base-env", "dev-env", "xl-env"]) {
                assert_eq!(names(p).last().unwrap(), &vec![root.to_string()], "budget {budget}");
            }
            // Below the roots, the smaller images' layers are the larger's.
            let (base, dev) = (&plans[0].layers, &plans[1].layers);
            assert_eq!(base[..base.len() - 1], dev[..base.len() - 1], "budget {budget}");
            assert_eq!(dev[..dev.len() - 1], plans[2].layers[..dev.len() - 1], "budget {budget}");
        }
        // Three member classes fit the three layers below the top: without
        // the rule, the roots made classes of their own that had to merge.
        let xl = plan_with_family(&x, Strategy::Shared, 4, &family).unwrap();
        let images: Vec<_> = [(&b, "base"), (&d, "dev"), (&x, "xl")]
            .iter()
            .map(|(g, _)| plan_layers("", &plan_with_family(g, Strategy::Shared, 4, &family).unwrap(), g))
            .collect();
        let size = |p: &str| {
            x.infos()
                .iter()
                .chain(b.infos())
                .chain(d.infos())
                .find(|i| i.path.as_str() == p)
                .map_or(0, |i| i.nar_size)
        };
        let r = family_report(&images, &size);
        assert_eq!(r.stored_bytes, r.unique_closure_bytes, "{:?}", names(&xl));
        // The three classes below, xl's root on top.
        assert_eq!(xl.layers.len(), 4, "{:?}", names(&xl));
    }

    #[test]
    fn a_library_nearly_all_depend_on_splits_nothing() {
        // Everything but the certificates depends on libc: its update
        // re-sends at most 1.1x what changed in any layering, so it makes no
        // classes; openssl, zlib and curl do.
        let (_, _, x) = nested();
        let desc = crate::bits::descendants(&x);
        let member = vec![true; x.len()];
        let v = Volatility::new(&x, &desc, &member, &History::default());
        let libc = x.index_of(&sp("libc")).unwrap();
        assert!(v.libraries.iter().all(|(_, paths)| !paths.contains(&libc)));
        let named: BTreeSet<&str> =
            v.libraries.iter().flat_map(|(_, p)| p.iter().map(|&i| x.info(i).path.name())).collect();
        assert_eq!(named, ["curl", "openssl", "zlib"].into_iter().collect());
    }

    /// Bytes of `plan`'s layers an update of `lib` re-sends, over the bytes
    /// it changes (itself and everything that depends on it).
    fn resend(g: &Graph, plan: &Plan, lib: &str) -> f64 {
        let root = g.index_of(&sp(lib)).unwrap();
        let desc = crate::bits::descendants(g);
        let size = |p: &StorePath| g.info(g.index_of(p).unwrap()).nar_size;
        let in_cone = |p: &StorePath| {
            let i = g.index_of(p).unwrap();
            i == root || desc.get(i, root)
        };
        let changed: u64 = g.infos().iter().filter(|i| in_cone(&i.path)).map(|i| i.nar_size).sum();
        let sent: u64 =
            plan.layers.iter().filter(|l| l.iter().any(in_cone)).flat_map(|l| l.iter().map(size)).sum();
        sent as f64 / changed as f64
    }

    #[test]
    fn scarce_layers_go_to_the_volatile_updates_first() {
        let (b, d, x) = nested();
        let family = fam(&[("base", &b), ("dev", &d), ("xl", &x)]);
        // The prior's openssl, zlib and curl (glibc: almost everything
        // depends on it) start light; those that would re-send more than
        // 1.1x weigh more until none does, where the layers allow.
        let miss = |budget: usize| {
            let p = plan_with_family(&x, Strategy::Shared, budget, &family).unwrap();
            p.validate(&x, budget).unwrap();
            let r: Vec<f64> = ["openssl", "zlib", "curl"].iter().map(|l| resend(&x, &p, l)).collect();
            let layers = format!("{:?}", names(&p));
            (r.iter().map(|r| (r - 1.1).max(0.0)).sum::<f64>(), r, layers)
        };
        for budget in 7..=12 {
            let (m, r, layers) = miss(budget);
            assert_eq!(m, 0.0, "budget {budget}: {r:?} {layers}");
        }
        // With one layer fewer it cannot be done (three member classes and
        // the dependents of curl and of openssl in two of them): of the
        // splits tried, the one that misses least (curl 1.00, openssl 1.19,
        // zlib 1.16, against 2.86 for curl at first).
        let (m, r, layers) = miss(6);
        assert!(m > 0.0 && m < 0.2, "{r:?} {layers}");
    }

    #[test]
    fn sets_that_are_not_nested_share_their_common_layers() {
        // A base set and two sets on it that hold nothing of each other
        // (the flake's runtime and dev sets), images of base + one set + an
        // application: the layers of what every set holds are the same.
        let base: &[(&str, &[&str], u64)] = &[
            ("libc", &[], 13 * M),
            ("busybox", &["libc"], M),
            ("certs", &[], 200 * K),
            ("zlib", &["libc"], 100 * K),
        ];
        let runtime: &[(&str, &[&str], u64)] = &[("hello", &["libc"], 10 * K)];
        let dev: &[(&str, &[&str], u64)] = &[
            ("tool", &["busybox"], 20 * K),
            ("sudo", &["libc", "zlib"], 500 * K),
            ("direnv", &["libc"], 5 * M),
        ];
        let closure_of = |sets: &[&[(&str, &[&str], u64)]], roots: &[&str]| {
            let g = graph(&sets.concat());
            let roots: Vec<usize> = roots.iter().map(|r| g.index_of(&sp(r)).unwrap()).collect();
            g.subgraph(&g.closure(&roots)).unwrap()
        };
        let family = fam(&[
            ("base", &graph(base)),
            ("runtime", &closure_of(&[base, runtime], &["hello"])),
            ("dev", &closure_of(&[base, dev], &["tool", "sudo", "direnv"])),
        ]);
        let image = |set: &[(&str, &[&str], u64)], app: &str| {
            let mut infos = graph(&[base, set].concat()).infos().to_vec();
            let refs = infos.iter().map(|i| i.path.clone()).collect();
            infos.push(PathInfo::from_raw_references(sp(app), refs, 4 * K));
            Graph::new(infos).unwrap()
        };
        let (rt, dv) = (image(runtime, "rt-app"), image(dev, "dev-app"));
        // (At 2, one layer for every set: nothing to share but all.)
        for budget in 3..=8 {
            let a = plan_with_family(&rt, Strategy::Shared, budget, &family).unwrap();
            let b = plan_with_family(&dv, Strategy::Shared, budget, &family).unwrap();
            assert_eq!(a.layers[0], b.layers[0], "budget {budget}: {:?} {:?}", names(&a), names(&b));
            // Every layer of the runtime image whose paths the dev image
            // holds too is one of its layers: no merge gave the dev image
            // a layer of base paths with dev paths mixed in.
            // (From 5 layers: four member classes and the top.)
            let shared = a.layers.iter().filter(|l| l.iter().all(|p| dv.index_of(p).is_some()));
            for layer in shared.filter(|_| budget >= 5) {
                assert!(b.layers.contains(layer), "budget {budget}: {:?} {:?}", names(&a), names(&b));
            }
        }
    }

    #[test]
    fn classes_merge_to_fit() {
        let class = |paths: usize, bytes: u128| Class {
            signature: Some(vec![0]),
            volatile: vec![],
            paths: (0..paths).collect(),
            bytes,
        };
        let merged = merge_to_fit(vec![class(5, 1), class(1, 9), class(3, 2), class(1, 1)], 2);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].paths.len(), 5);
        assert!(merged[1].signature.is_none());
        assert_eq!((merged[1].paths.len(), merged[1].bytes), (5, 12));
    }
}
