package oauth

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/oauth2"
)

// maxTokenFile bounds what is read of a token file.
const maxTokenFile = 64 << 10

// LoadToken reads a token file: the JSON of an oauth2.Token, of which
// only refresh_token is needed.
func LoadToken(path string) (*oauth2.Token, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, &Error{Err: fmt.Errorf("refresh token file %s does not exist", path), Auth: true,
				Fix: "run: alertd oauth login -config FILE"}
		}
		return nil, &Error{Err: fmt.Errorf("read refresh token file: %w", err), Auth: true}
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxTokenFile+1))
	if err != nil {
		return nil, &Error{Err: fmt.Errorf("read refresh token file %s: %w", path, err), Auth: true}
	}
	var tok oauth2.Token
	if len(data) > maxTokenFile || json.Unmarshal(data, &tok) != nil {
		return nil, &Error{Err: fmt.Errorf("refresh token file %s is not token JSON", path), Auth: true,
			Fix: `it must hold {"refresh_token": "..."}; run: alertd oauth login -config FILE`}
	}
	if tok.RefreshToken == "" {
		return nil, &Error{Err: fmt.Errorf("refresh token file %s has no refresh_token", path), Auth: true,
			Fix: "run: alertd oauth login -config FILE"}
	}
	return &tok, nil
}

// SaveToken writes tok to path, readable by its owner only, replacing
// the file atomically: a crash leaves the old token or the new one.
func SaveToken(path string, tok *oauth2.Token) error {
	data, err := json.MarshalIndent(tok, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write refresh token file: %w", err)
	}
	defer os.Remove(tmp.Name()) // after the rename, a no-op
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("write refresh token file: %w", err)
	}
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("write refresh token file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write refresh token file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write refresh token file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write refresh token file: %w", err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
