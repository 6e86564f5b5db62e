DROP TABLE kv_store;
DROP TABLE notification_deliveries;
DROP TABLE notifications;
