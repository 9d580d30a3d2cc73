// Package files opens and writes the files a user names: a log, a trace, a
// dump, a placement. It opens only regular files and never blocks doing so
// (a named pipe with no writer would hold the open, deaf to Ctrl-C), and it
// writes a file whole or not at all. It imports nothing of moetop's, so
// every package that reads what a user hands it can use it.
package files
