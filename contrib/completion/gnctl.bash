# bash completion for gnctl: verbs, options, and machine names, job ids and profiles
# asked of the running gnspawnd (of the -H host when one is given).

_gnctl() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
    local verbs="list snapshots jobs job update rollback build remove prune profiles status logs cancel wait"
    local verb="" i
    local -a host=()
    for ((i = 1; i < COMP_CWORD; i++)); do
        case ${COMP_WORDS[i]} in
            -H|--host) host=(--host "${COMP_WORDS[i+1]}"); ((i++)) ;;
            --host=*) host=("${COMP_WORDS[i]}") ;;
            -*) ;;
            *) verb=${COMP_WORDS[i]}; break ;;
        esac
    done

    # The first column of a gnctl listing.
    _gnctl_column() {
        gnctl "${host[@]}" "$@" --no-legend 2>/dev/null | awk '{ print $1 }'
    }

    if [[ $prev == -H || $prev == --host ]]; then
        COMPREPLY=($(compgen -A hostname -- "$cur"))
        return
    fi
    if [[ -z $verb ]]; then
        COMPREPLY=($(compgen -W "$verbs --help --version --host" -- "$cur"))
        return
    fi
    if [[ $prev == --profile ]]; then
        COMPREPLY=($(compgen -W "$(_gnctl_column profiles)" -- "$cur"))
        return
    fi
    if [[ $cur == -* ]]; then
        local options="--help"
        local listing="--json --no-legend" following="--quiet --verbose"
        local waiting="$following --no-block --fail-if-busy"
        case $verb in
            list|snapshots|jobs|profiles) options+=" $listing" ;;
            job|status) options+=" --json" ;;
            update) options+=" --all --scheduled --pretend --keep-failed $waiting" ;;
            build) options+=" --profile --resume --keep-failed $waiting" ;;
            rollback|remove) options+=" $waiting" ;;
            prune) options+=" $following --no-block" ;;
            wait) options+=" $following" ;;
            logs) options+=" --follow --lines" ;;
        esac
        COMPREPLY=($(compgen -W "$options" -- "$cur"))
        return
    fi
    case $verb in
        snapshots|update|rollback|remove|prune|status|build)
            COMPREPLY=($(compgen -W "$(_gnctl_column list)" -- "$cur")) ;;
        job|cancel|wait)
            COMPREPLY=($(compgen -W "$(_gnctl_column jobs)" -- "$cur")) ;;
        logs)
            COMPREPLY=($(compgen -W "$(_gnctl_column list) $(_gnctl_column jobs)" -- "$cur")) ;;
    esac
}

complete -F _gnctl gnctl
