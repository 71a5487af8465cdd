//! Token source and Graph client (owned by the Graph work).
