#!/usr/bin/env zsh
# SPDX-License-Identifier: MIT
# Prints, one per line, what zsh's completion system offers for a command line, as a user
# pressing Tab at its end would get it:
#     zsh -f tests/tools/zsh-complete.zsh COMPLETION_DIR 'imgctl ' [DUMP]
# A clean interactive zsh (zsh -f -i) runs under zsh/zpty with COMPLETION_DIR first in $fpath
# and compinit loaded; compadd is wrapped to print each match it is given as "MATCH:word".
# Anything else the completion functions print (their errors) is printed too, so that the
# caller sees it. Exit 2 when the shell does not answer. DUMP: compinit's dump file, made by
# the first call that names it and read by the next ones (compinit without a dump takes
# seconds); without it compinit -D.
zmodload zsh/zpty || { print -u2 'zsh-complete: no zsh/zpty module'; exit 1 }
dir=$1 line=$2 dump=${3:-}

zpty z zsh -f -i
if [[ -n $dump ]]; then init="compinit -u -d ${(q)dump}"; else init="compinit -u -D"; fi
zpty -w z "PROMPT= RPROMPT= PS2= ; fpath=(${(q)dir} \$fpath); autoload -U compinit; $init"
zpty -w z "source ${(q)${0:A:h}}/zsh-complete-init.zsh"
# Reads until the marker (or the end, if the shell died).
zpty -r z got '*zsh-complete-ready*' || { print -u2 "zsh-complete: the shell did not start: $got"; exit 2 }
zpty -w -n z "$line"$'\t'
integer seen=0
while zpty -r z got; do
        print -rn -- $got
done | while IFS= read -r got; do
        got=${got//$'\r'/}
        if [[ $got == *zsh-complete-mark* ]]; then
                (( seen++ )) && exit 0
                continue
        fi
        (( seen )) && print -r -- $got
done
