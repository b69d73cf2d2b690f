-- Schema of the webinfra app. Applied by the primary's boot (idempotent); replicas receive it
-- through replication.
CREATE DATABASE IF NOT EXISTS webinfra CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS webinfra.messages (
    id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    text VARCHAR(280) NOT NULL,
    host VARCHAR(64) NOT NULL,
    created_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    KEY created_at (created_at)
) ENGINE=InnoDB;
