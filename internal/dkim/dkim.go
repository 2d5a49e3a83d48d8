// Package dkim is dkimd's DKIM signing core (RFC 6376, with RFC 8463 for
// Ed25519): it parses a header block the way verifiers read it, picks the
// header fields a signature covers (SignedFields, with oversigning),
// canonicalizes them and the body with relaxed/relaxed, hashes with SHA-256
// as the body streams in, and assembles and folds the DKIM-Signature field,
// with b= made by any crypto.Signer.
//
// It owns how a signature is made, and nothing about which key makes it or
// where messages come from: that is package signer's. It does no I/O and
// starts no goroutines; the body is hashed in the caller's Write calls.
// Verification is not here: dkimd's tests hold every signature against
// go-msgauth, dkimpy and OpenDKIM (docs/decisions.md, "dkimd signs with its
// own DKIM core").
package dkim
