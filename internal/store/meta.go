package store

import "fmt"

// Meta keys: small values that describe the service rather than alerts.
const (
	// MetaSessionFilters: the MQTT filters the broker may hold for
	// alertd's persistent session (JSON list of strings), so that a start
	// with fewer rules can unsubscribe the others.
	MetaSessionFilters = "mqtt_session_filters"
)

// Meta returns a copy of the meta value under key; nil when absent.
func (db *DB) Meta(key string) ([]byte, error) {
	var v []byte
	err := db.View(func(tx *Tx) error {
		if b := tx.Bucket(BucketMeta).Get([]byte(key)); b != nil {
			v = append([]byte(nil), b...)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", key, err)
	}
	return v, nil
}

// PutMeta writes the meta value under key.
func (db *DB) PutMeta(key string, v []byte) error {
	if err := db.Update(func(tx *Tx) error { return tx.Bucket(BucketMeta).Put([]byte(key), v) }); err != nil {
		return fmt.Errorf("write %s: %w", key, err)
	}
	return nil
}
