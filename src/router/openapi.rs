//! The OpenAPI 3.1 document of the management and revocation routers.
