# SPDX-License-Identifier: MIT
# Sourced by zsh-complete.zsh into the interactive zsh under test: Tab completes, each match
# is printed, and the shell exits after the first completion.
bindkey '^I' complete-word
zsh_complete_mark() { print -r -- zsh-complete-mark }
compprefuncs=( zsh_complete_mark )
comppostfuncs=( zsh_complete_mark exit )
zstyle ':completion:*' list-grouped false
zstyle ':completion:*' insert-tab false
compadd() {
        # Calls that only fill an array (-O, -A, -D) do not offer anything.
        if [[ ${@[1,(i)(-|--)]} == *-(O|A|D)\ * ]]; then
                builtin compadd "$@"
                return
        fi
        local -a hits
        local h
        builtin compadd -A hits "$@"
        for h in $hits; do print -r -- "MATCH:$h"; done
        builtin compadd "$@"
}
print -r -- zsh-complete-ready
