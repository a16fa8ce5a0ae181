# SPDX-License-Identifier: MIT
# bash completion for imgctl(1), the command-line client of imgd.
#
# Installed as share/bash-completion/completions/imgctl, where bash-completion loads it on
# first use; it can also be sourced by hand. It needs nothing from bash-completion.
# Keep the command and option lists in step with src/imgctl/main.c and completion/_imgctl (zsh);
# tests/integration/test-completion.c checks that both offer every command.

_imgctl()
{
        local cur prev words cword
        cur=${COMP_WORDS[COMP_CWORD]}
        prev=${COMP_WORDS[COMP_CWORD-1]}
        words=("${COMP_WORDS[@]}")
        cword=$COMP_CWORD
        COMPREPLY=()

        local commands='status jobs show wait retry cancel pause resume drain enqueue reload
                metrics events top verify plan reconcile help'
        local global_opts='-c --config -s --socket --connect-timeout -h --help --version'
        local states='queued running retry done dead cancelled'

        # "--opt=value": bash splits it into "--opt", "=", "value" (or "=" then an empty
        # word while the value is still empty).
        if [[ $cur == = ]]; then
                prev=${words[cword-1]}
                cur=
        elif [[ $prev == = && $cword -ge 2 ]]; then
                prev=${words[cword-2]}
        fi

        # The command is the first word after the global options and their arguments.
        local i cmd= cmd_index=0
        for ((i = 1; i < cword; i++)); do
                case ${words[i]} in
                -c | --config | -s | --socket | --connect-timeout)
                        # The argument follows, possibly after "=".
                        [[ ${words[i+1]} == = ]] && ((i++))
                        ((i++))
                        ;;
                -*) ;;
                =) ;;
                *)
                        cmd=${words[i]}
                        cmd_index=$i
                        break
                        ;;
                esac
        done

        if [[ -z $cmd ]]; then
                case $prev in
                -c | --config | -s | --socket)
                        compopt -o filenames 2>/dev/null
                        mapfile -t COMPREPLY < <(compgen -f -- "$cur")
                        return 0
                        ;;
                --connect-timeout)
                        return 0 # a duration: nothing to offer
                        ;;
                esac
                if [[ $cur == -* ]]; then
                        COMPREPLY=($(compgen -W "$global_opts" -- "$cur"))
                else
                        COMPREPLY=($(compgen -W "$commands" -- "$cur"))
                fi
                return 0
        fi

        case $cmd in
        status)
                COMPREPLY=($(compgen -W '--json --help' -- "$cur"))
                ;;
        jobs)
                case $prev in
                --state)
                        COMPREPLY=($(compgen -W "$states" -- "$cur"))
                        return 0
                        ;;
                --watch)
                        compopt -o filenames 2>/dev/null
                        mapfile -t COMPREPLY < <(compgen -d -- "$cur")
                        return 0
                        ;;
                --since | --limit)
                        # A time such as 10m, 2h or 1d, or a date; a number.
                        return 0
                        ;;
                esac
                COMPREPLY=($(compgen -W '--state --watch --since --limit --json --help' \
                        -- "$cur"))
                ;;
        show | cancel)
                # A job ID is the daemon's to know; only the options are completed.
                [[ $cur == -* ]] && COMPREPLY=($(compgen -W '--json --help' -- "$cur"))
                ;;
        retry)
                [[ $cur == -* ]] && COMPREPLY=($(compgen -W '--dead --json --help' -- "$cur"))
                ;;
        pause | resume | reload | metrics | plan)
                COMPREPLY=($(compgen -W '--json --help' -- "$cur"))
                ;;
        reconcile)
                if [[ $cur == -* ]]; then
                        COMPREPLY=($(compgen -W '--json --help' -- "$cur"))
                else
                        COMPREPLY=($(compgen -W 'pause resume retract-removed' -- "$cur"))
                fi
                ;;
        wait | drain)
                case $prev in
                -t | --timeout)
                        return 0
                        ;;
                esac
                if [[ $cmd == wait ]]; then
                        COMPREPLY=($(compgen -W '--timeout --help' -- "$cur"))
                else
                        COMPREPLY=($(compgen -W '--timeout --json --help' -- "$cur"))
                fi
                ;;
        events)
                COMPREPLY=($(compgen -W '--follow --json --help' -- "$cur"))
                ;;
        top)
                case $prev in
                -n | --iterations)
                        return 0
                        ;;
                esac
                COMPREPLY=($(compgen -W '--iterations --help' -- "$cur"))
                ;;
        enqueue | verify)
                # A file (enqueue); a folder or manifest (verify).
                if [[ $cur == -* ]]; then
                        if [[ $cmd == verify ]]; then
                                COMPREPLY=($(compgen -W '--all --json --help' -- "$cur"))
                        else
                                COMPREPLY=($(compgen -W '--json --help' -- "$cur"))
                        fi
                else
                        compopt -o filenames 2>/dev/null
                        mapfile -t COMPREPLY < <(compgen -f -- "$cur")
                fi
                ;;
        help)
                ((cword == cmd_index + 1)) && COMPREPLY=($(compgen -W "$commands" -- "$cur"))
                ;;
        esac
        return 0
}

complete -F _imgctl imgctl
