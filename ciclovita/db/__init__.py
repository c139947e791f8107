"""The customer database: schema, engine, migrations and dialect-neutral bulk writes."""
