//! Where in the mesh a record was made: which proxy (sidecar, gateway, waypoint), which
//! way the listener faces, and the Istio objects that routed the request, from the
//! metadata istiod puts on the routes and clusters it builds.

/// The proxy, from its Envoy node id (`sidecar~<ip>~<pod>.<ns>~…`, `router~…` for gateways,
/// `waypoint~…` in ambient mode).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum ProxyKind {
    Sidecar,
    Gateway,
    Waypoint,
    /// Not an Istio node id (plain Envoy).
    #[default]
    Other,
}

impl ProxyKind {
    pub(crate) fn from_node_id(id: &[u8]) -> Self {
        match id.split(|&b| b == b'~').next() {
            Some(b"sidecar") => ProxyKind::Sidecar,
            Some(b"router") => ProxyKind::Gateway,
            Some(b"waypoint") => ProxyKind::Waypoint,
            _ => ProxyKind::Other,
        }
    }
}

/// Which way the request went through this proxy (`direction` in the record): a sidecar's
/// inbound or outbound listener, from `xds.listener_direction`; a gateway or a waypoint
/// says so whatever its listeners' direction.
pub(crate) fn direction(proxy: ProxyKind, listener_direction: Option<i64>) -> Option<&'static str> {
    match proxy {
        ProxyKind::Gateway => Some("gateway"),
        ProxyKind::Waypoint => Some("waypoint"),
        ProxyKind::Sidecar | ProxyKind::Other => match listener_direction {
            // envoy.config.core.v3.TrafficDirection
            Some(1) => Some("inbound"),
            Some(2) => Some("outbound"),
            _ => None,
        },
    }
}

/// An Istio object named by `filter_metadata.istio.config`:
/// `/apis/<group>/<version>/namespaces/<namespace>/<kind>/<name>`, kind in kebab case
/// (`virtual-service`, `destination-rule`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IstioObject<'a> {
    pub kind: &'a [u8],
    pub namespace: &'a [u8],
    pub name: &'a [u8],
}

pub(crate) fn parse_istio_config(path: &[u8]) -> Option<IstioObject<'_>> {
    let mut parts = path.strip_prefix(b"/apis/")?.split(|&b| b == b'/');
    let (_group, _version) = (parts.next()?, parts.next()?);
    if parts.next()? != b"namespaces" {
        return None;
    }
    let (namespace, kind, name) = (parts.next()?, parts.next()?, parts.next()?);
    let well_formed =
        parts.next().is_none() && [namespace, kind, name].iter().all(|p| !p.is_empty());
    well_formed.then_some(IstioObject {
        kind,
        namespace,
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn proxies_and_directions() {
        let sidecar =
            ProxyKind::from_node_id(b"sidecar~10.0.0.1~reviews-1.shop~shop.svc.cluster.local");
        assert_eq!(sidecar, ProxyKind::Sidecar);
        assert_eq!(direction(sidecar, Some(1)), Some("inbound"));
        assert_eq!(direction(sidecar, Some(2)), Some("outbound"));
        assert_eq!(direction(sidecar, Some(0)), None);
        let gateway = ProxyKind::from_node_id(b"router~10.0.0.2~ingress-1.istio-system~x");
        assert_eq!(direction(gateway, Some(2)), Some("gateway"));
        let waypoint = ProxyKind::from_node_id(b"waypoint~10.0.0.3~waypoint-1.shop~x");
        assert_eq!(direction(waypoint, None), Some("waypoint"));
        assert_eq!(ProxyKind::from_node_id(b"meshaudit-demo"), ProxyKind::Other);
        assert_eq!(direction(ProxyKind::Other, Some(1)), Some("inbound"));
    }

    #[test]
    fn istio_config_paths() {
        let vs = parse_istio_config(
            b"/apis/networking.istio.io/v1/namespaces/shop/virtual-service/reviews",
        )
        .unwrap();
        assert_eq!(
            (vs.kind, vs.namespace, vs.name),
            (&b"virtual-service"[..], &b"shop"[..], &b"reviews"[..])
        );
        // Istio 1.23 and earlier write v1alpha3.
        let dr = parse_istio_config(
            b"/apis/networking.istio.io/v1alpha3/namespaces/shop/destination-rule/reviews",
        )
        .unwrap();
        assert_eq!(dr.kind, b"destination-rule");
        for bad in [
            &b""[..],
            b"/apis/networking.istio.io/v1/namespaces/shop/virtual-service",
            b"/apis/networking.istio.io/v1/namespaces/shop/virtual-service/a/b",
            b"/apis/networking.istio.io/v1/namespaces//virtual-service/a",
            b"/apis/networking.istio.io/v1/ns/shop/virtual-service/a",
            b"apis/networking.istio.io/v1/namespaces/shop/virtual-service/a",
        ] {
            assert_eq!(
                parse_istio_config(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
