-- The hub's, the gradebook's and the progress service's databases (POSTGRES_DB makes the first).
CREATE DATABASE gradebook OWNER academy;
CREATE DATABASE progress OWNER academy;
