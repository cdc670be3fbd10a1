-- SKUs are unique across the catalog: claimed here before a product is created.
CREATE TABLE IF NOT EXISTS skus
(
    sku        text PRIMARY KEY,
    product_id uuid NOT NULL UNIQUE
);
