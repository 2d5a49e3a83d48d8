//go:build cgo && linux

package rsasign_test

const cgoBuild = true
