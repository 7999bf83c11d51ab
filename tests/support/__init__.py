"""What the tests run against: a TLS broker, a Stripe stand-in, a browser, real processes."""
