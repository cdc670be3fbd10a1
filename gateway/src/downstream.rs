//! The services behind the gateway and where they are: the instances registered in the
//! service registry, round-robin, or the configured base URL when none is.

use runtime::Settings;
use runtime::discovery::Resolver;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    Customer,
    Product,
    Order,
    Payment,
    Saga,
    Projectors,
}

impl Service {
    /// Every service `/health` waits for.
    pub const ALL: [Service; 6] =
        [Service::Customer, Service::Product, Service::Order, Service::Payment, Service::Saga, Service::Projectors];

    /// The name used in logs, error messages and the health answer (the stack's component name).
    pub fn name(self) -> &'static str {
        match self {
            Service::Customer => "customer",
            Service::Product => "product",
            Service::Order => "order",
            Service::Payment => "payment",
            Service::Saga => "saga-orchestrator",
            Service::Projectors => "projectors",
        }
    }
}

/// Configured base URL of each service, without a trailing slash, and the registry.
#[derive(Debug, Clone)]
pub struct Downstreams {
    customer: String,
    product: String,
    order: String,
    payment: String,
    saga: String,
    projectors: String,
    resolver: Resolver,
}

impl Downstreams {
    pub fn from_settings(settings: &Settings) -> Self {
        Self::from_fn(|service| {
            match service {
                Service::Customer => &settings.customer_url,
                Service::Product => &settings.product_url,
                Service::Order => &settings.order_url,
                Service::Payment => &settings.payment_url,
                Service::Saga => &settings.saga_url,
                Service::Projectors => &settings.projectors_url,
            }
            .clone()
        })
    }

    /// Tests point services at their own listeners with this.
    pub fn from_fn(mut url: impl FnMut(Service) -> String) -> Self {
        let mut url = |service| url(service).trim_end_matches('/').to_owned();
        Self {
            customer: url(Service::Customer),
            product: url(Service::Product),
            order: url(Service::Order),
            payment: url(Service::Payment),
            saga: url(Service::Saga),
            projectors: url(Service::Projectors),
            resolver: Resolver::disabled(),
        }
    }

    /// Find services through the registry, the configured URLs being the fallback.
    pub fn with_resolver(mut self, resolver: Resolver) -> Self {
        self.resolver = resolver;
        self
    }

    pub fn resolver(&self) -> &Resolver {
        &self.resolver
    }

    /// The base URLs to try for one call, in order: every registered instance starting at the
    /// next in round-robin order, or the configured URL.
    pub fn candidates(&self, service: Service) -> Vec<String> {
        self.resolver.candidates(service.name(), self.base_url(service))
    }

    /// The configured base URL.
    pub fn base_url(&self, service: Service) -> &str {
        match service {
            Service::Customer => &self.customer,
            Service::Product => &self.product,
            Service::Order => &self.order,
            Service::Payment => &self.payment,
            Service::Saga => &self.saga,
            Service::Projectors => &self.projectors,
        }
    }
}
