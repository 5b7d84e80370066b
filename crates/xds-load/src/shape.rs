//! The meshes the benchmarks run: the reference mesh, scaled to the fleet.

use remora_synthetic::Shape;

/// The reference mesh (10,000 sidecar pods) scaled to `proxies` pods: Services, routes and
/// namespaces in proportion, so every Service keeps ten pods, every namespace twenty Services,
/// and each proxy sees as many Services per pod as in the reference. Same seed.
pub fn shape_for(proxies: usize, egress: bool) -> Shape {
    let reference = Shape::reference();
    let scale = |n: usize| (n * proxies).div_ceil(reference.pods).max(1);
    let namespaces = scale(reference.namespaces);
    Shape {
        namespaces,
        // At least one team namespace stays unshared, or no proxy's egress scope would
        // differ from another's.
        shared_namespaces: scale(reference.shared_namespaces).min(namespaces.saturating_sub(1)),
        services: scale(reference.services),
        pods: proxies,
        routes: scale(reference.routes),
        egress,
        seed: reference.seed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_thousand_proxies_are_the_reference_mesh_and_fewer_scale_it_down() {
        assert_eq!(shape_for(10_000, false), Shape::reference());
        let small = shape_for(1_000, true);
        assert_eq!(
            (
                small.namespaces,
                small.shared_namespaces,
                small.services,
                small.pods,
                small.routes
            ),
            (5, 1, 100, 1_000, 200)
        );
        assert!(small.egress);
        let tiny = shape_for(10, false);
        assert_eq!(
            (tiny.namespaces, tiny.shared_namespaces, tiny.services),
            (1, 0, 1)
        );
    }
}
