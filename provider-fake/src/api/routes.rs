//! [`Routes`] for the fake cloud.

use async_trait::async_trait;
use cloudprovider_api::{CloudResult, Route, Routes};

use crate::cloud::FakeCloud;
use crate::method::Method;
use crate::state::State;

#[async_trait]
impl Routes for FakeCloud {
    async fn list_routes(&self, cluster_name: &str) -> CloudResult<Vec<Route>> {
        self.call(Method::ListRoutes, cluster_name.to_owned(), |st, now| {
            let st: &State = st;
            Ok(st.routes.list(cluster_name, |node| st.node_gone(node, now)))
        })
        .await
    }

    async fn create_route(
        &self,
        cluster_name: &str,
        name_hint: &str,
        route: &Route,
    ) -> CloudResult<()> {
        self.call(
            Method::CreateRoute,
            route.destination_cidr.to_string(),
            |st, now| {
                let State {
                    routes, instances, ..
                } = st;
                routes.create(cluster_name, name_hint, route, |node| {
                    instances.get(node).is_some_and(|r| !r.exists_at(now))
                })
            },
        )
        .await
    }

    async fn delete_route(&self, cluster_name: &str, route: &Route) -> CloudResult<()> {
        self.call(
            Method::DeleteRoute,
            route.destination_cidr.to_string(),
            |st, _| {
                st.routes.delete(cluster_name, route);
                Ok(())
            },
        )
        .await
    }
}
