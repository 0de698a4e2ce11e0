//! The order tables are written in: parents before children, so foreign keys hold.
//!
//! Tables and their foreign-key edges form a graph; its strongly connected components
//! (Tarjan) are the groups that must be written together (a cycle of foreign keys is one
//! group, applied in one statement batch, not rejected); the components in topological order
//! give parents first. Upserts follow that order, deletes the reverse (invariant 9 in `docs/architecture.md`).

use std::collections::{BTreeMap, BTreeSet};

/// Groups of tables, parents first. `tables` are all tables; `edges` are `(child, parent)`.
/// Tables within a group and independent groups keep name order, so the result is stable.
pub fn parent_first_groups(
    tables: &BTreeSet<String>,
    edges: &[(String, String)],
) -> Vec<Vec<String>> {
    let names: Vec<&String> = tables.iter().collect();
    let index: BTreeMap<&String, usize> = names.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    // Edge parent → child: a parent must come first.
    let mut children = vec![Vec::new(); names.len()];
    for (child, parent) in edges {
        if let (Some(&c), Some(&p)) = (index.get(child), index.get(parent))
            && c != p
        {
            children[p].push(c);
        }
    }
    for list in &mut children {
        list.sort_unstable();
        list.dedup();
    }
    let components = tarjan(&children);
    // Tarjan emits components in reverse topological order of the edge direction
    // (parent → child), i.e. children's components first.
    components
        .into_iter()
        .rev()
        .map(|mut c| {
            c.sort_unstable();
            c.into_iter().map(|i| names[i].clone()).collect()
        })
        .collect()
}

/// Strongly connected components, iteratively (no recursion limit on deep schemas).
fn tarjan(graph: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let n = graph.len();
    let (mut index, mut low, mut on_stack) = (vec![usize::MAX; n], vec![0; n], vec![false; n]);
    let (mut stack, mut components, mut next) = (Vec::new(), Vec::new(), 0);
    for root in 0..n {
        if index[root] != usize::MAX {
            continue;
        }
        let mut work = vec![(root, 0usize)];
        while let Some(&mut (v, ref mut i)) = work.last_mut() {
            if *i == 0 && index[v] == usize::MAX {
                index[v] = next;
                low[v] = next;
                next += 1;
                stack.push(v);
                on_stack[v] = true;
            }
            if let Some(&w) = graph[v].get(*i) {
                *i += 1;
                if index[w] == usize::MAX {
                    work.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                let mut component = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                components.push(component);
            }
        }
    }
    components
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(tables: &[&str], edges: &[(&str, &str)]) -> Vec<Vec<String>> {
        let tables = tables.iter().map(|t| (*t).to_owned()).collect();
        let edges: Vec<(String, String)> =
            edges.iter().map(|(c, p)| ((*c).to_owned(), (*p).to_owned())).collect();
        parent_first_groups(&tables, &edges)
    }

    #[test]
    fn parents_come_first() {
        let g = groups(
            &["order_items", "orders", "customers", "products"],
            &[("order_items", "orders"), ("orders", "customers"), ("order_items", "products")],
        );
        let pos = |t: &str| g.iter().position(|grp| grp.iter().any(|x| x == t)).expect("present");
        assert!(pos("customers") < pos("orders") && pos("orders") < pos("order_items"));
        assert!(pos("products") < pos("order_items"));
        assert!(g.iter().all(|grp| grp.len() == 1));
    }

    #[test]
    fn cycles_become_one_group() {
        let g = groups(&["a", "b", "c", "d"], &[("a", "b"), ("b", "a"), ("c", "a"), ("d", "d")]);
        assert!(g.contains(&vec!["a".to_owned(), "b".to_owned()]), "{g:?}");
        let pos = |t: &str| g.iter().position(|grp| grp.iter().any(|x| x == t)).expect("present");
        assert!(pos("a") < pos("c"), "{g:?}");
        assert_eq!(g.iter().map(Vec::len).sum::<usize>(), 4);
    }

    #[test]
    fn edges_to_unknown_tables_are_ignored_and_deep_chains_do_not_recurse() {
        let names: Vec<String> = (0..20_000).map(|i| format!("t{i:05}")).collect();
        let edges: Vec<(String, String)> =
            names.windows(2).map(|w| (w[1].clone(), w[0].clone())).collect();
        let tables = names.iter().cloned().collect();
        let mut edges2 = edges.clone();
        edges2.push(("t00000".into(), "elsewhere".into()));
        let g = parent_first_groups(&tables, &edges2);
        assert_eq!(g.len(), 20_000);
        assert_eq!(g[0], ["t00000"]);
        assert_eq!(g[19_999], ["t19999"]);
    }
}
